/**
 * The explorer's address (src/lib/explorer/link.svelte.ts): a link that cannot be opened stays in
 * the address until the session changes; the edited prompt comes back after a reload.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { readExperimentQuery } from '../../src/lib/links/codec.ts';
import { ExplorerLink } from '../../src/lib/explorer/link.svelte.ts';
import { explorer, until } from './in-process.ts';

async function opened(search: string) {
  const app = explorer();
  const link = new ExplorerLink(app);
  link.beforeLoad(search);
  await app.load();
  await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
  await link.afterLoad();
  return { app, link };
}

describe('the explorer address', () => {
  beforeEach(() => sessionStorage.clear());

  it('holds a link that cannot be opened until the session changes', async () => {
    const { app, link } = await opened('?v=1&x=bm90LWEtbGluaw');
    expect(link.error).toMatch(/its data is damaged/);
    expect(link.addressQuery).toBeNull();
    await app.step();
    const query = link.addressQuery;
    expect(query).toMatch(/^v=1&x=/);
    expect(readExperimentQuery(`?${query}`)).toMatchObject({ kind: 'experiment', experiment: { steps: 1 } });
  });

  it('holds a link made with another model, and names the model to load', async () => {
    const { app, link } = await opened('');
    await app.step();
    const made = app.experiment!;
    const other = await opened('');
    const failed = await other.link.open({ ...made, model: { id: 'kvscope-llama-8l', sha256: 'c'.repeat(64) } });
    expect(failed).toBe(false);
    expect(other.link.error).toMatch(/load kvscope-llama-8l to open it/);
    expect(other.link.addressQuery).toBeNull();
    expect(link.addressQuery).not.toBeNull();
  });

  it('keeps the edited prompt through a reload: in the address, and in the tab for a reload before any session', async () => {
    const first = await opened('');
    first.app.setPrompt('The dog sat on the log, and then');
    first.link.rememberDraft();
    const address = first.link.addressQuery!;
    expect(readExperimentQuery(`?${address}`)).toMatchObject({ kind: 'experiment', draft: 'The dog sat on the log, and then' });

    // a reload of that address: the link replays, the edit comes back
    const again = await opened(`?${address}`);
    expect(again.app.appliedPrompt).toBe(first.app.appliedPrompt);
    expect(again.app.prompt).toBe('The dog sat on the log, and then');

    // the same address without its edit (say it did not fit): the tab's own edit of that prompt comes back
    const reading = readExperimentQuery(`?${address}`);
    if (reading.kind !== 'experiment') throw new Error('no experiment');
    const plain = await opened('');
    plain.link.rememberDraft();
    sessionStorage.setItem('kvscope:explorer-prompt', JSON.stringify({ prompt: 'my own edit', applied: reading.experiment.prompt }));
    await plain.link.open(reading.experiment);
    expect(plain.app.prompt).toBe('my own edit');

    // no address at all: the tab's edit is the prompt
    const bare = await opened('');
    expect(bare.app.prompt).toBe('my own edit');
  });
});
