/**
 * `computeCalibration(model, options)` — the whole calibration of one model, computed with the
 * engine (Node or browser): RazorAttention's probe, Wu et al. + semantic retrieval scores on
 * passkey prompts, CompressKV's per-layer output errors (which use the semantic scores) and the
 * PCA bases of keys and values (pca, headmerge). Each section is seeded on its own, so adding or
 * leaving out one never changes another's numbers.
 * The result is a Calibration (format.ts); `serializeCalibration` turns it into calibration.json.
 */
import type { EngineModel } from '../session.ts';
import { CalibrationError, CALIBRATION_FORMAT, CALIBRATION_FORMAT_VERSION, calibrationModel, type Calibration, type CalibrationSection } from './format.ts';
import { runLayerError, type LayerErrorOptions } from './layer-error.ts';
import { runRazorProbe, type ProbeOptions } from './probe.ts';
import { runProjections, type ProjectionOptions } from './projections-run.ts';
import { runRetrievalCalibration, type RetrievalOptions } from './retrieval.ts';

export interface CalibrationProgress {
  section: CalibrationSection;
  done: number;
  total: number;
}

export interface CalibrationOptions {
  /** held-out documents (texts): needle filler, layer-error and projection prompts; required for retrieval / layerError / projections */
  documents?: readonly string[];
  /** sections to compute (default all four; layerError needs retrieval) */
  sections?: readonly CalibrationSection[];
  /** one seed for every section unless a section's own options set one (default 1) */
  seed?: number;
  probe?: Omit<ProbeOptions, 'onProgress'>;
  retrieval?: Omit<RetrievalOptions, 'onProgress'>;
  layerError?: Omit<LayerErrorOptions, 'onProgress'>;
  projections?: Omit<ProjectionOptions, 'onProgress'>;
  onProgress?: (progress: CalibrationProgress) => void;
}

const ALL: readonly CalibrationSection[] = ['razor', 'retrieval', 'layerError', 'projections'];

export async function computeCalibration(model: EngineModel, options: CalibrationOptions = {}): Promise<Calibration> {
  const started = globalThis.performance.now();
  const sections = options.sections ?? ALL;
  const seed = options.seed ?? 1;
  const documents = options.documents ?? [];
  for (const s of sections) if (!ALL.includes(s)) throw new CalibrationError(`unknown calibration section "${s}" (known: ${ALL.join(', ')})`);
  if ((sections.includes('retrieval') || sections.includes('layerError') || sections.includes('projections')) && documents.length === 0) {
    throw new CalibrationError('retrieval, layer-error and projection calibration need held-out documents (options.documents, e.g. static/data/heldout.json)');
  }
  if (sections.includes('layerError') && !sections.includes('retrieval')) {
    throw new CalibrationError('layerError calibration needs the retrieval section (its selection uses the semantic retrieval heads)');
  }
  const progress = (section: CalibrationSection) => (done: number, total: number) => options.onProgress?.({ section, done, total });
  const calibration: Calibration = {
    format: CALIBRATION_FORMAT,
    formatVersion: CALIBRATION_FORMAT_VERSION,
    model: calibrationModel(model.manifest),
    createdBy: 'kvscope computeCalibration',
  };
  if (sections.includes('razor')) {
    calibration.razor = await runRazorProbe(model, { seed, ...options.probe, onProgress: progress('razor') });
  }
  if (sections.includes('retrieval')) {
    calibration.retrieval = await runRetrievalCalibration(model, documents, { seed, ...options.retrieval, onProgress: progress('retrieval') });
  }
  if (sections.includes('layerError')) {
    calibration.layerError = await runLayerError(model, documents, calibration.retrieval!.semantic, {
      seed,
      ...options.layerError,
      onProgress: progress('layerError'),
    });
  }
  if (sections.includes('projections')) {
    calibration.projections = await runProjections(model, documents, { seed, ...options.projections, onProgress: progress('projections') });
  }
  calibration.seconds = Math.round((globalThis.performance.now() - started) / 100) / 10;
  return calibration;
}
