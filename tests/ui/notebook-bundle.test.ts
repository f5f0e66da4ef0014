/**
 * Notebook bundles (src/lib/notebooks/bundle.ts): a bundle round-trips notebooks exactly, traces
 * included, with traces in their own zip entries; every broken, foreign, too-new or oversized file is
 * refused with a BundleError naming the problem (and the bad field's path); random valid notebooks
 * round-trip, and random damage to a bundle never escapes as anything but a BundleError.
 */
import fc from 'fast-check';
import { strFromU8, strToU8, unzipSync, zipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { BUNDLE_FORMAT, BUNDLE_MAX_ENTRIES, BUNDLE_VERSION, BundleError, bundleFileName, decodeBundle, encodeBundle } from '../../src/lib/notebooks/bundle.ts';
import type { Cell, Notebook } from '../../src/lib/notebooks/types.ts';

const FIGURE = { name: 'cache-map', title: 'Cache map', caption: 'tiny · h2o · step 12', svg: '<svg xmlns="http://www.w3.org/2000/svg"><rect width="4" height="4"/></svg>' };
const TABLE = { columns: ['lane', 'kept', 'KL'], rows: [['full', 64, 0], ['h2o', 32, 0.0125], ['tova', null, 'n/a']] };

function sample(id = 'nb-1', title = 'KV notes'): Notebook {
  return {
    id,
    title,
    created: 1_700_000_000_000,
    updated: 1_700_000_100_000,
    cells: [
      { kind: 'markdown', id: 'c-md', text: '# Notes\n\nH2O keeps **heavy hitters**.' },
      { kind: 'experiment', id: 'c-x', link: '/?x=abc', trace: '{"version":3,"steps":[1,2,3]}', summary: 'tiny · h2o · 12 steps', text: 'The cat sat', figure: FIGURE },
      { kind: 'comparison', id: 'c-cmp', link: '/compare?lanes=full,h2o', summary: '2 lanes', table: TABLE, figure: null },
      { kind: 'evaluation', id: 'c-ev', link: '/bench?cells=1', summary: 'needle', table: TABLE, figure: FIGURE },
      { kind: 'experiment', id: 'c-x2', link: '/?x=def', trace: null, summary: 'trace too large', text: '', figure: null },
    ],
  };
}

/** A bundle whose bundle.json is `json` (plus any extra entries). */
function zipOf(json: unknown, extra: Record<string, Uint8Array> = {}): Uint8Array {
  return zipSync({ 'bundle.json': strToU8(typeof json === 'string' ? json : JSON.stringify(json)), ...extra });
}

function header(notebooks: unknown[]): Record<string, unknown> {
  return { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, exported: new Date().toISOString(), notebooks };
}

function refusal(bytes: Uint8Array, name?: string): string {
  try {
    decodeBundle(bytes, name);
  } catch (error) {
    expect(error).toBeInstanceOf(BundleError);
    return (error as Error).message;
  }
  throw new Error('the bundle was accepted');
}

/** sample() with one field replaced, as bundle.json text (traces inline are accepted too). */
function withCell(index: number, patch: Record<string, unknown>): Uint8Array {
  const notebook = sample();
  const cells: unknown[] = notebook.cells.map((cell, i) => (i === index ? { ...cell, ...patch } : cell));
  return zipOf(header([{ ...notebook, cells }]));
}

describe('bundle round trip', () => {
  it('decodes exactly the notebooks it encoded, traces in their own entries', () => {
    const notebooks = [sample('nb-1'), sample('nb-2', 'Second')];
    const bytes = encodeBundle(notebooks, { app: 'kvscope 0.1.0' });
    expect(decodeBundle(bytes)).toEqual(notebooks);

    const entries = unzipSync(bytes);
    expect(Object.keys(entries).sort()).toEqual(['bundle.json', 'traces/nb-1/c-x.json', 'traces/nb-2/c-x.json']);
    expect(strFromU8(entries['traces/nb-1/c-x.json'])).toBe('{"version":3,"steps":[1,2,3]}');
    const json = JSON.parse(strFromU8(entries['bundle.json']));
    expect(json).toMatchObject({ format: BUNDLE_FORMAT, version: 1, app: 'kvscope 0.1.0' });
    expect(new Date(json.exported).toISOString()).toBe(json.exported);
    expect(json.notebooks[0].cells[1].trace).toEqual({ file: 'traces/nb-1/c-x.json' });
    expect(json.notebooks[0].cells[4].trace).toBeNull();
  });

  it('a trace that is not well-formed UTF-16 still comes back readable', () => {
    const notebook = sample();
    notebook.cells[1] = { ...notebook.cells[1], trace: 'half \ud800 surrogate' } as Cell;
    const [decoded] = decodeBundle(encodeBundle([notebook]));
    expect(decoded.cells[1]).toMatchObject({ trace: 'half \ufffd surrogate' });
  });

  it('names the download after the notebook, or the date for several', () => {
    expect(bundleFileName([sample('a', 'KV notes: H2O vs TOVA!')])).toBe('KV-notes-H2O-vs-TOVA.kvscope.zip');
    expect(bundleFileName([sample('a'), sample('b')], new Date('2026-12-01T10:00:00Z'))).toBe('kvscope-notebooks-2026-12-01.zip');
    expect(bundleFileName([sample('a', '★★★')], new Date('2026-12-01T10:00:00Z'))).toBe('kvscope-notebooks-2026-12-01.zip');
  });
});

describe('refused bundles name the problem', () => {
  it('not a zip, no bundle.json, bad JSON, wrong format, newer version', () => {
    expect(refusal(strToU8('# just markdown'), 'notes.zip')).toBe('notes.zip is not a kvscope bundle (not a zip file).');
    expect(refusal(new Uint8Array(0))).toMatch(/not a zip file/);
    expect(refusal(zipSync({ 'readme.txt': strToU8('hi') }))).toMatch(/not a kvscope bundle \(it has no bundle\.json\)/);
    expect(refusal(zipOf('{"format": "kvscope-notebook-bundle", '))).toMatch(/bundle\.json is not valid JSON/);
    expect(refusal(zipOf({ ...header([]), format: 'something-else' }))).toMatch(/not a kvscope bundle .*format "something-else"/);
    expect(refusal(zipOf([1, 2]))).toMatch(/bundle\.json is not an object/);
    expect(refusal(zipOf({ ...header([]), version: 2 }))).toBe(
      'This bundle was written by a newer kvscope (bundle version 2); this app reads version 1 — update the app.',
    );
    expect(refusal(zipOf({ ...header([]), version: '1' }))).toMatch(/version must be a whole number/);
    expect(refusal(zipOf({ ...header([]), exported: 5 }))).toMatch(/exported and app must be text/);
    expect(refusal(zipSync({ 'bundle.json': new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }))).toMatch(/bundle\.json is not UTF-8 text/);
  });

  it('a damaged zip is a BundleError, not a crash', () => {
    const bytes = encodeBundle([sample()]);
    expect(refusal(bytes.slice(0, 40))).toMatch(/damaged|not a kvscope bundle/);
  });

  it('every bad field is named by its path', () => {
    const cases: [Uint8Array, RegExp][] = [
      [withCell(2, { table: { columns: ['a', 'b', 'c'], rows: [['x', 1, null], ['y', 2]] } }), /notebooks\[0\]\.cells\[2\]\.table\.rows\[1\] must have 3 values \(one per column\), not 2/],
      [withCell(2, { table: { columns: ['a'], rows: [[{ html: '<b>' }]] } }), /notebooks\[0\]\.cells\[2\]\.table\.rows\[0\]\[0\] must be text, a finite number or null/],
      [withCell(3, { kind: 'script' }), /notebooks\[0\]\.cells\[3\]\.kind must be markdown, experiment, comparison or evaluation/],
      [withCell(1, { id: 'c-md' }), /notebooks\[0\]\.cells\[1\]\.id repeats the cell id c-md/],
      [withCell(1, { id: '../../etc' }), /notebooks\[0\]\.cells\[1\]\.id must be an id/],
      [withCell(1, { link: 'javascript:alert(1)' }), /notebooks\[0\]\.cells\[1\]\.link must be a link within kvscope/],
      [withCell(2, { link: '//evil.example/x' }), /notebooks\[0\]\.cells\[2\]\.link must be a link within kvscope/],
      [withCell(3, { figure: { ...FIGURE, svg: 'x'.repeat(2 * 1024 * 1024 + 1) } }), /notebooks\[0\]\.cells\[3\]\.figure\.svg is 2\.1 MB, over the limit of 2 MB/],
      [withCell(3, { figure: { ...FIGURE, svg: 42 } }), /notebooks\[0\]\.cells\[3\]\.figure\.svg must be text/],
      [withCell(1, { trace: { file: 'traces/nb-1/c-x.json' } }), /notebooks\[0\]\.cells\[1\]\.trace names traces\/nb-1\/c-x\.json, which is not in the bundle/],
      [withCell(1, { trace: { file: 'traces/other/c-x.json' } }), /notebooks\[0\]\.cells\[1\]\.trace must be null or \{ "file": "traces\/nb-1\/c-x\.json" \}/],
      [withCell(0, { text: 7 }), /notebooks\[0\]\.cells\[0\]\.text must be text/],
      [zipOf(header([{ ...sample(), title: '   ' }])), /notebooks\[0\]\.title must be 1 to 200 characters/],
      [zipOf(header([{ ...sample(), title: 'x'.repeat(201) }])), /notebooks\[0\]\.title is 201 characters, over the limit of 200 characters/],
      [zipOf(header([{ ...sample(), updated: 'yesterday' }])), /notebooks\[0\]\.updated must be a time/],
      [zipOf(header([sample(), sample()])), /notebooks\[1\]\.id repeats the id nb-1/],
      [zipOf(header([{ ...sample(), cells: 'none' }])), /notebooks\[0\]\.cells must be a list/],
      [zipOf({ ...header([]), notebooks: {} }), /notebooks must be a list/],
    ];
    for (const [bytes, pattern] of cases) expect(refusal(bytes)).toMatch(pattern);
  });

  it('zip bombs are refused from the directory, before inflating', () => {
    // declare a 3.75 GB bundle.json in the central directory (signature PK\1\2, uncompressed size at +24)
    const bytes = encodeBundle([sample()]);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let patched = 0;
    for (let i = 0; i + 46 < bytes.length; i++) {
      if (view.getUint32(i, true) === 0x02014b50) {
        view.setUint32(i + 24, 0xf0000000, true);
        patched++;
      }
    }
    expect(patched).toBe(2);
    expect(refusal(bytes, 'bomb.zip')).toBe('bomb.zip would unpack to more than 200 MB, more than a kvscope bundle may; it was not opened.');

    const many: Record<string, Uint8Array> = {};
    for (let i = 0; i <= BUNDLE_MAX_ENTRIES; i++) many[`traces/x/${i}.json`] = new Uint8Array(0);
    expect(refusal(zipOf(header([]), many))).toMatch(/holds more than 10000 files/);
  });
});

const text = (maxLength: number) => fc.string({ unit: 'grapheme', maxLength });
const figure = fc.option(fc.record({ name: text(20), title: text(40), caption: text(40), svg: text(200) }), { nil: null });
const value = fc.oneof(text(12), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => (x === 0 ? 0 : x)), fc.constant(null));
const table = fc.integer({ min: 0, max: 4 }).chain((n) =>
  fc.record({ columns: fc.array(text(10), { minLength: n, maxLength: n }), rows: fc.array(fc.array(value, { minLength: n, maxLength: n }), { maxLength: 5 }) }),
);
const link = text(40).map((s) => `/?x=${s}`);
const cell: fc.Arbitrary<Cell> = fc.oneof(
  fc.record({ kind: fc.constant('markdown' as const), id: fc.uuid(), text: text(200) }),
  fc.record({ kind: fc.constant('experiment' as const), id: fc.uuid(), link, trace: fc.option(text(300), { nil: null }), summary: text(40), text: text(100), figure }),
  fc.record({ kind: fc.constant('comparison' as const), id: fc.uuid(), link, summary: text(40), table, figure }),
  fc.record({ kind: fc.constant('evaluation' as const), id: fc.uuid(), link, summary: text(40), table, figure }),
);
const title = text(60).map((s) => s.trim()).filter((s) => s.length > 0 && s.length <= 200);
const notebook: fc.Arbitrary<Notebook> = fc.record({
  id: fc.uuid(),
  title,
  created: fc.nat(),
  updated: fc.nat(),
  cells: fc.uniqueArray(cell, { selector: (c) => c.id, maxLength: 6 }),
});

describe('properties', () => {
  it('random valid notebooks round-trip', () => {
    fc.assert(
      fc.property(fc.uniqueArray(notebook, { selector: (n) => n.id, maxLength: 4 }), (notebooks) => {
        expect(decodeBundle(encodeBundle(notebooks))).toEqual(notebooks);
      }),
      { numRuns: 150 },
    );
  });

  it('random damage decodes to valid notebooks or is a BundleError, never another exception', () => {
    const bytes = encodeBundle([sample('nb-1'), sample('nb-2', 'Second')]);
    const damage = fc.array(fc.record({ at: fc.nat({ max: bytes.length - 1 }), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(damage, fc.option(fc.nat({ max: bytes.length }), { nil: undefined }), (changes, cut) => {
        const broken = bytes.slice(0, cut);
        for (const { at, byte } of changes) if (at < broken.length) broken[at] = byte;
        let decoded: Notebook[];
        try {
          decoded = decodeBundle(broken);
        } catch (error) {
          expect(error).toBeInstanceOf(BundleError);
          return;
        }
        // whatever survived is valid: it encodes and decodes again unchanged
        expect(decodeBundle(encodeBundle(decoded))).toEqual(decoded);
      }),
      { numRuns: 400 },
    );
  });
});
