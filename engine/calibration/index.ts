/** Calibration: offline head / layer statistics for policies (docs/calibration.md). Browser-safe. */
export {
  CALIBRATION_FILE,
  CALIBRATION_FORMAT,
  CALIBRATION_FORMAT_VERSION,
  CalibrationError,
  calibrationModel,
  checkCalibration,
  graphFingerprint,
  parseCalibration,
  readCalibration,
  requireCalibration,
  serializeCalibration,
  type Calibration,
  type CalibrationModel,
  type CalibrationSection,
  type LayerErrorCalibration,
  type RazorCalibration,
  type RetrievalCalibration,
} from './format.ts';
export { computeCalibration, type CalibrationOptions, type CalibrationProgress } from './compute.ts';
export { runRazorProbe, probeTokens, echoTargets, inductionTargets, scoreProbeRow, isScoredRow, type ProbeLayout, type ProbeOptions } from './probe.ts';
export { runRetrievalCalibration, runRetrievalTrial, semanticMass, needleSpan, type RetrievalOptions, type RetrievalTrial } from './retrieval.ts';
export { runLayerError, layerOutputError, type LayerErrorOptions } from './layer-error.ts';
export { basisOf, basisToJson, parseProjections, singularValues, ORTHONORMAL_TOLERANCE, type PcaBasisJson, type ProjectionCalibration } from './projections.ts';
export { runProjections, type ProjectionOptions } from './projections-run.ts';
export { recorderPolicy, RECORDER_ID, type RecorderHooks } from './recorder.ts';
export { formatCalibration } from './report.ts';
