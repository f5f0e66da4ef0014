/**
 * The runs of a speculative-decoding evaluation: each drafter spec given, expanded over γ values
 * the way eval's --budgets expands policies (budgets.ts). A spec that sets its γ parameter itself
 * (`model:gamma=2`) runs once as given; so does every spec when no γ list is given. Checked
 * against the registry only, so the CLI can refuse a bad spec before loading a model.
 */
import { DraftSpecError } from '../errors.ts';
import { findDrafter, formatDrafter, parseDrafter } from '../spec/index.ts';

export interface SpecRun {
  /** the spec as given */
  input: string;
  /** drafter id */
  id: string;
  /** canonical spec of this run */
  spec: string;
  gamma: number;
}

/** Whether `text` names parameter `name` at its top level (not inside a nested policy). */
function setsParam(text: string, name: string): boolean {
  const colon = text.indexOf(':');
  if (colon < 0) return false;
  let depth = 0;
  let flat = '';
  for (const c of text.slice(colon + 1)) {
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (depth === 0) flat += c;
  }
  return flat.split(',').some((part) => part.split('=')[0].trim() === name);
}

/** Expands drafter specs over `gammas` (null = each as given). Throws DraftSpecError. */
export function expandSpecRuns(drafts: readonly string[], gammas: readonly number[] | null): SpecRun[] {
  if (drafts.length === 0) throw new DraftSpecError('no drafter spec given');
  const runs: SpecRun[] = [];
  for (const input of drafts) {
    const parsed = parseDrafter(input);
    if (!parsed) throw new DraftSpecError(`"none" is plain decoding, which every run is compared with already: give a drafter`);
    const definition = findDrafter(parsed.id)!;
    const param = definition.gammaParam;
    const values = gammas && !setsParam(input.trim(), param) ? gammas : [Number(parsed.params[param])];
    for (const gamma of values) {
      // formatting checks the parameters: a γ outside the range is refused like one written in the spec
      const spec = formatDrafter({ id: parsed.id, params: { ...parsed.params, [param]: gamma } });
      if (runs.some((r) => r.spec === spec)) throw new DraftSpecError(`drafter ${spec} is listed twice`);
      runs.push({ input, id: parsed.id, spec, gamma });
    }
  }
  return runs;
}
