/**
 * Command-line arguments: node:util parseArgs with kvscope's messages, and the value checks every
 * command shares. A bad command line throws UsageError, which `main` turns into exit code 2.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The command line itself is wrong: exit code 2. */
export class UsageError extends Error {}

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

/**
 * `--temperature -1` would read "-1" as an option: a value that looks like a negative number is
 * joined to its option (`--temperature=-1`) so that the value check names the real problem.
 */
function joinNegativeValues(args: readonly string[], options: OptionSpecs): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = /^--([\w-]+)$/.exec(args[i])?.[1];
    const next = args[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** parseArgs (strict, positionals allowed) whose errors name the option and point at --help. */
export function parse<const T extends OptionSpecs>(command: string, args: string[], options: T) {
  try {
    return parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    const e = error as Error & { code?: string };
    const quoted = /'([^']+)'/.exec(e.message)?.[1];
    let message = e.message;
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') message = `unknown option ${quoted ?? ''}`.trim();
    else if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const option = /--[\w-]+/.exec(e.message)?.[0] ?? 'an option';
      message = /does not take an argument/.test(e.message) ? `${option} does not take a value` : `${option} needs a value`;
    }
    throw new UsageError(`${message} (see kvscope ${command} --help)`);
  }
}

/** Fails on positional arguments beyond `allowed` (values must follow their option). */
export function noExtraPositionals(command: string, positionals: string[], allowed: number, example: string): void {
  if (positionals.length > allowed) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[allowed])} (values follow their option, e.g. ${example}) (see kvscope ${command} --help)`);
  }
}

/** A decimal integer (sign allowed), else NaN. */
export const asInteger = (text: string) => (/^[+-]?\d+$/.test(text) ? Number(text) : NaN);
/** A decimal number (sign, fraction, exponent allowed), else NaN: no hex, no "Infinity". */
export const asNumber = (text: string) => (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN);

export function integerOption(name: string, raw: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER, what?: string): number {
  if (raw === undefined) return fallback;
  const value = asInteger(raw.trim());
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const expected = what ?? (min === 1 && max === Number.MAX_SAFE_INTEGER ? 'a positive integer' : `an integer in ${min}..${max}`);
    throw new UsageError(`--${name} must be ${expected}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** --seed of every command: a 32-bit unsigned integer. */
export function seedOption(raw: string | undefined, fallback: number): number {
  return integerOption('seed', raw, fallback, 0, 0xffffffff, 'an integer in 0..4294967295');
}

export function numberOption(name: string, raw: string | undefined, fallback: number, check: (v: number) => boolean, expected: string): number {
  if (raw === undefined) return fallback;
  const value = asNumber(raw.trim());
  if (!Number.isFinite(value) || !check(value)) throw new UsageError(`--${name} must be ${expected}, got ${JSON.stringify(raw)}`);
  return value;
}

/** A comma-separated list of numbers read by `parse` (asInteger, asNumber); undefined when not given. */
export function listOption(name: string, raw: string | undefined, parse: (text: string) => number, expected: string): number[] | undefined {
  if (raw === undefined) return undefined;
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new UsageError(`--${name} must be a comma-separated list of ${expected}, got ${JSON.stringify(raw)}`);
  return parts.map((p) => {
    const value = parse(p);
    if (!Number.isFinite(value)) throw new UsageError(`--${name} must be a comma-separated list of ${expected}, got ${JSON.stringify(p)} in ${JSON.stringify(raw)}`);
    return value;
  });
}

/** A file-name option given as "" (or blanks). */
export function requireFileName(name: string, raw: string | undefined): void {
  if (raw !== undefined && raw.trim() === '') throw new UsageError(`--${name} needs a file name`);
}
