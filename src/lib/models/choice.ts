/**
 * Which model a page loads: a shipped one (static/models/index.json, by id) or an uploaded one (by
 * its storage key, store.ts). The choice is the pages' shared setting (localStorage): a model picked
 * in the explorer is the one /compare and /bench open with, until another is picked or a link names
 * another.
 */
import type { LoadCommand } from '../worker/protocol.ts';

export type ModelChoice = { kind: 'shipped'; id: string } | { kind: 'uploaded'; key: string };

const SETTING = 'kvscope:model';

/** The choice as one string (a <select>'s value, the setting): `shipped:<id>` / `uploaded:<key>`. */
export function choiceValue(choice: ModelChoice): string {
  return choice.kind === 'shipped' ? `shipped:${choice.id}` : `uploaded:${choice.key}`;
}

export function parseChoice(value: string | null | undefined): ModelChoice | null {
  if (!value) return null;
  if (value.startsWith('shipped:') && value.length > 8) return { kind: 'shipped', id: value.slice(8) };
  if (value.startsWith('uploaded:') && value.length > 9) return { kind: 'uploaded', key: value.slice(9) };
  return null;
}

export function sameChoice(a: ModelChoice | null, b: ModelChoice | null): boolean {
  return (a === null ? '' : choiceValue(a)) === (b === null ? '' : choiceValue(b));
}

/** What a load command carries for the choice (none: the index's default). */
export function loadFields(choice: ModelChoice | null): Pick<LoadCommand, 'modelId' | 'modelSource'> {
  if (!choice) return {};
  return choice.kind === 'shipped' ? { modelId: choice.id } : { modelSource: { kind: 'uploaded', key: choice.key } };
}

export function savedChoice(): ModelChoice | null {
  try {
    return parseChoice(globalThis.localStorage?.getItem(SETTING));
  } catch {
    return null;
  }
}

export function saveChoice(choice: ModelChoice | null): void {
  try {
    if (choice) globalThis.localStorage?.setItem(SETTING, choiceValue(choice));
    else globalThis.localStorage?.removeItem(SETTING);
  } catch {
    // storage refused (private mode): the choice lasts for this page only
  }
}
