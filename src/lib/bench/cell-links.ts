/**
 * "Open in explorer" of a /bench result: the explorer experiment that shows that cell's case,
 * its inputs rebuilt with the evaluation's own builders (engine/eval, engine/metrics) from the
 * report's settings — never re-implemented:
 *
 *  - passkey (needle) cell: the passkey prompt of one (length, depth, trial) exactly as
 *    needlePrompts builds it (the first trial the policy got wrong, else the first trial), the
 *    row's canonical spec, greedy, the eval's decodeTokens steps. The eval prefills all but the
 *    last prompt token and feeds that one as a step; the explorer prefills the whole prompt;
 *  - perplexity cell: the first held-out window (heldoutWindows) as text, the row's spec, greedy,
 *    a few steps after it. Perplexity is teacher-forced; the explorer decodes its own tokens;
 *  - spec row: the text set's first held-out prompt (the windows specPrompts takes), the target
 *    policy, the row's drafter, the eval's temperature and prompt 0's seed, its `tokens` steps.
 *
 * Prompts travel as text: the explorer tokenizes them again (held-out windows end on a token
 * boundary, so their text encodes back to the same tokens in all but rare merges at the cut).
 */
import type { KvTokenizer } from '../../../engine/model/tokenizer.ts';
import { bosPrefix, fillerSentences, heldoutWindows } from '../../../engine/metrics/heldout.ts';
import { needlePrompts, type NeedleSettings } from '../../../engine/eval/needle.ts';
import type { PplSettings } from '../../../engine/eval/perplexity.ts';
import { evaluationDocuments, textSetOf, type HeldoutDocument } from '../../../engine/eval/spec-texts.ts';
import type { EvalReport, EvalRow, SpecReport, SpecRow } from '../worker/lab-protocol.ts';
import type { ModelInfo, SamplerSettings } from '../worker/protocol.ts';
import { experimentOfRun } from '../links/experiment.ts';
import { explorerLink, type ExplorerHref } from '../links/open-in-explorer.ts';

/** What rebuilding the eval's inputs needs: the model's tokenizer and the held-out documents (cell-inputs.ts loads them). */
export interface CellInputs {
  tokenizer: Pick<KvTokenizer, 'encode' | 'decode'>;
  documents: readonly HeldoutDocument[];
}

/** A cell's link and what it holds, in words (the cell's tooltip). */
export type CellLink = ExplorerHref & { what: string };

/** steps the explorer decodes after a perplexity window */
export const PPL_EXPLORER_STEPS = 16;

const greedy = (seed: number): SamplerSettings => ({ temperature: 0, topK: 0, topP: 1, seed });

/** Text of token ids without the BOS the tokenizer prepends (the explorer adds it back). */
function textOf(tokenizer: CellInputs['tokenizer'], ids: readonly number[]): string {
  const bos = bosPrefix(tokenizer).length;
  return tokenizer.decode(ids.slice(bos));
}

/** The eval's texts as runEval gets them (the non-empty documents, in file order). */
function evalTexts(inputs: CellInputs): string[] {
  return inputs.documents.map((d) => d.text).filter((t) => t.length > 0);
}

/**
 * Links of an evaluation report's cells, built lazily and kept (one needle grid or window per
 * report). `model` is the page's ModelInfo (its id and sha256 name the model in the link).
 */
export class EvalCellLinks {
  private needle: ReturnType<typeof needlePrompts> | null = null;
  private window: string | null = null;

  constructor(
    private readonly root: string,
    private readonly model: Pick<ModelInfo, 'id' | 'sha256'>,
    private readonly report: EvalReport,
    private readonly inputs: CellInputs,
  ) {}

  /** The link of one row (a policy at a budget) of the report. */
  link(row: EvalRow): CellLink {
    if (row.needle) return this.needleLink(row);
    return this.pplLink(row);
  }

  private needleLink(row: EvalRow): CellLink {
    const settings = this.report.settings as NeedleSettings;
    this.needle ??= needlePrompts(this.inputs.tokenizer, fillerSentences(evalTexts(this.inputs)), settings);
    const cells = row.needle!.cells;
    // the first trial the policy got wrong: the case worth looking at; else the first
    let at = { cell: 0, trial: 0 };
    found: for (let c = 0; c < cells.length; c++) {
      for (let t = 0; t < cells[c].examples.length; t++) {
        if (!cells[c].examples[t].success) {
          at = { cell: c, trial: t };
          break found;
        }
      }
    }
    const prompt = this.needle[at.cell][at.trial];
    const cell = cells[at.cell];
    const example = cell?.examples[at.trial];
    const experiment = experimentOfRun({ model: this.model, prompt: prompt.text, sampler: greedy(settings.seed), policy: row.spec, steps: settings.decodeTokens });
    const answered = example ? `${example.success ? 'right' : 'wrong'}: answered ${JSON.stringify(example.output.trim())} for ${example.key}` : `key ${prompt.key}`;
    const what = `the passkey prompt of length ${cell?.length ?? prompt.ids.length}, depth ${cell?.depth ?? prompt.depth}, trial ${at.trial + 1} (${answered}) under ${row.spec}, greedy, ${settings.decodeTokens} steps`;
    return { ...explorerLink(this.root, experiment), what };
  }

  private pplLink(row: EvalRow): CellLink {
    const settings = this.report.settings as PplSettings;
    if (this.window === null) {
      const [first] = heldoutWindows(this.inputs.tokenizer, evalTexts(this.inputs), { windows: 1, tokens: settings.tokens, seed: settings.seed });
      this.window = textOf(this.inputs.tokenizer, first);
    }
    const steps = Math.max(0, Math.min(PPL_EXPLORER_STEPS, this.report.model.context - settings.tokens));
    const experiment = experimentOfRun({ model: this.model, prompt: this.window, sampler: greedy(settings.seed), policy: row.spec, steps });
    const what = `perplexity is measured teacher-forced; the explorer decodes the same text under the same policy: the first held-out window (${settings.tokens} tokens) as the prompt, ${row.spec}, greedy, ${steps} steps`;
    return { ...explorerLink(this.root, experiment), what };
  }
}

/** Links of a spec report's rows: prompt 0 of each text set, built once per set. */
export class SpecRowLinks {
  private prompts = new Map<string, string>();

  constructor(
    private readonly root: string,
    private readonly model: Pick<ModelInfo, 'id' | 'sha256'>,
    private readonly report: SpecReport,
    private readonly inputs: CellInputs,
  ) {}

  link(row: SpecRow): CellLink {
    const s = this.report.settings;
    let prompt = this.prompts.get(row.text);
    if (prompt === undefined) {
      // specPrompts' windows (engine/eval/spec.ts): the evaluation half of the text set, seeded
      const texts = evaluationDocuments(this.inputs.documents)
        .filter((d) => textSetOf(d.src) === row.text)
        .map((d) => d.text);
      const [first] = heldoutWindows(this.inputs.tokenizer, texts, { windows: 1, tokens: s.promptTokens, seed: s.seed });
      prompt = textOf(this.inputs.tokenizer, first);
      this.prompts.set(row.text, prompt);
    }
    // prompt 0 draws from seed + 0 (spec.ts samplerFor)
    const sampler: SamplerSettings = { temperature: s.temperature, topK: 0, topP: 1, seed: s.seed >>> 0 };
    const experiment = experimentOfRun({ model: this.model, prompt, sampler, policy: s.policy, drafter: row.spec, steps: s.tokens });
    const what = `the first ${row.text} prompt (${s.promptTokens} tokens) drafted by ${row.spec} on ${s.policy}, ${s.temperature === 0 ? 'greedy' : `temperature ${s.temperature}, seed ${s.seed}`}, ${s.tokens} steps`;
    return { ...explorerLink(this.root, experiment), what };
  }
}
