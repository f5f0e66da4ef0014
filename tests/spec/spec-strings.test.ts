/** Drafter spec strings (engine/spec/spec.ts through the registry in engine/spec/index.ts). */
import { describe, expect, it } from 'vitest';
import { DraftSpecError } from '../../engine/errors.ts';
import { DRAFTERS, formatDrafter, parseDrafter } from '../../engine/spec/index.ts';
import { nestedPolicyToSpec, specToNestedPolicy } from '../../engine/spec/spec.ts';

function parseError(text: string): DraftSpecError {
  try {
    parseDrafter(text);
  } catch (error) {
    expect(error).toBeInstanceOf(DraftSpecError);
    return error as DraftSpecError;
  }
  throw new Error(`${JSON.stringify(text)} parsed without an error`);
}

const canonical = (text: string) => formatDrafter(parseDrafter(text)!);

describe('canonical drafter specs', () => {
  it('every registered drafter: its bare id parses, and the canonical form is a fixed point', () => {
    for (const definition of DRAFTERS) {
      const spec = parseDrafter(definition.id);
      expect(spec?.id).toBe(definition.id);
      const text = formatDrafter(spec!);
      // every parameter is written
      for (const param of definition.params) expect(text).toContain(`${param.name}=`);
      expect(canonical(text)).toBe(text);
      expect(parseDrafter(text)).toEqual(spec);
      // the γ parameter exists and is an integer ≥ 1 by default
      const gamma = spec!.params[definition.gammaParam];
      expect(Number.isInteger(gamma) && (gamma as number) >= 1).toBe(true);
    }
  });

  it('writes every parameter in schema order', () => {
    expect(canonical('model')).toBe('model:gamma=4,model=,policy=full');
    expect(canonical('lookup')).toBe('lookup:max_ngram=3,k=10');
    expect(canonical('lookup:k=5,max_ngram=2')).toBe('lookup:max_ngram=2,k=5');
    expect(canonical(' model : model=kvscope-draft-2l , gamma=5 ')).toBe('model:gamma=5,model=kvscope-draft-2l,policy=full');
  });

  it('none (or nothing) is plain decoding', () => {
    expect(parseDrafter('none')).toBeNull();
    expect(parseDrafter('  none ')).toBeNull();
    expect(parseDrafter('')).toBeNull();
  });
});

describe('nested policies', () => {
  it('self:gamma=4,policy=streaming(sinks=4,recent=60): commas inside the parentheses belong to the policy', () => {
    const spec = parseDrafter('self:gamma=4,policy=streaming(sinks=4,recent=60)')!;
    expect(spec.id).toBe('self');
    expect(spec.params.gamma).toBe(4);
    // stored as the plain policy spec a Session takes, every parameter written
    expect(spec.params.policy).toBe('streaming:sinks=4,recent=60,positions=p2');
    const text = formatDrafter(spec);
    expect(text).toBe('self:gamma=4,policy=streaming(sinks=4,recent=60,positions=p2)');
    expect(parseDrafter(text)).toEqual(spec);
  });

  it('a composition joins members with +, nested or in the plain policy syntax', () => {
    const spec = parseDrafter('model:policy=snapkv(budget=256)+kivi(bits=4)')!;
    expect(spec.params.policy).toBe('snapkv:budget=256,window=32,kernel=5,pool=avg,gqa=mean,pyramid=false,beta=20 + kivi:bits=4,k_bits=0,v_bits=0,group=32,v_group=32,residual=32');
    const text = formatDrafter(spec);
    expect(text).toBe('model:gamma=4,model=,policy=snapkv(budget=256,window=32,kernel=5,pool=avg,gqa=mean,pyramid=false,beta=20)+kivi(bits=4,k_bits=0,v_bits=0,group=32,v_group=32,residual=32)');
    expect(parseDrafter(text)).toEqual(spec);
    // the plain policy syntax gives the same spec
    expect(parseDrafter('model:policy=snapkv:budget=256 + kivi:bits=4')).toEqual(spec);
    // a bare policy id nests too
    expect(canonical('self:policy=h2o')).toBe('self:gamma=4,policy=h2o(heavy=0.1,recent=0.1,accumulate=sum,gqa=sum)');
    expect(canonical('self:policy=full')).toBe('self:gamma=4,policy=full');
  });

  it('nestedPolicyToSpec / specToNestedPolicy are inverse on canonical specs', () => {
    expect(nestedPolicyToSpec('streaming(sinks=4,recent=60)+kivi(bits=4)')).toBe('streaming:sinks=4,recent=60 + kivi:bits=4');
    const nested = specToNestedPolicy('h2o:heavy=8,recent=8 + kivi');
    expect(nested).toBe('h2o(heavy=8,recent=8,accumulate=sum,gqa=sum)+kivi(bits=2,k_bits=0,v_bits=0,group=32,v_group=32,residual=32)');
    expect(specToNestedPolicy(nestedPolicyToSpec(nested))).toBe(nested);
  });
});

describe('clear errors', () => {
  it('unknown drafter: lists the known ones, with a did-you-mean', () => {
    const known = DRAFTERS.map((d) => d.id).join(', ');
    expect(parseError('lokup:k=3').message).toBe(`unknown drafter "lokup" (known: ${known}, or none) — did you mean lookup?`);
    expect(parseError('modl').message).toContain('did you mean model?');
    const far = parseError('xyzzy').message;
    expect(far).toContain('unknown drafter "xyzzy"');
    expect(far).not.toContain('did you mean');
    for (const definition of DRAFTERS) expect(far).toContain(definition.id);
  });

  it('unknown parameter: names it, with a did-you-mean or the list', () => {
    expect(parseError('model:gama=3').message).toBe('model: unknown parameter "gama" (did you mean gamma?)');
    expect(parseError('lookup:zzzzzz=3').message).toBe('lookup: unknown parameter "zzzzzz" (parameters: max_ngram, k)');
    expect(parseError('model:gamma').message).toBe('model: expected name=value, got "gamma"');
  });

  it('γ ≤ 0 and a non-integer γ are refused, for every drafter', () => {
    for (const definition of DRAFTERS) {
      const name = definition.gammaParam;
      for (const bad of ['0', '-1', '2.5', 'four', '']) {
        const message = parseError(`${definition.id}:${name}=${bad}`).message;
        expect(message).toContain(`${definition.id}: ${name} must be an integer`);
        expect(message).toContain(JSON.stringify(bad));
      }
    }
    expect(parseError('model:gamma=0').message).toBe('model: gamma must be an integer in [1, 32], got "0"');
    expect(parseError('model:gamma=-1').message).toBe('model: gamma must be an integer in [1, 32], got "-1"');
  });

  it('unbalanced parentheses', () => {
    expect(parseError('self:policy=streaming(sinks=4').message).toBe('self: unbalanced "(" in "policy=streaming(sinks=4"');
    expect(parseError('self:policy=streaming(sinks=4))').message).toBe('self: unbalanced ")" in "policy=streaming(sinks=4))"');
    expect(parseError('self:policy=streaming)sinks=4(').message).toContain('unbalanced ")"');
  });

  it('a bad nested policy names the drafter, the parameter and what is wrong', () => {
    expect(parseError('self:policy=streamin(sinks=4)').message).toMatch(/^self: policy: unknown policy "streamin" \(known: .*\) — did you mean streaming\?$/);
    expect(parseError('self:policy=streaming(sink=4)').message).toBe('self: policy: streaming: unknown parameter "sink" (did you mean sinks?)');
    expect(parseError('self:policy=streaming(sinks=-1)').message).toBe('self: policy: streaming: sinks must be an integer ≥ 0, got "-1"');
    expect(parseError('model:policy=snapkv(budget=256)+kivi(bits=99)').message).toMatch(/^model: policy: kivi: bits must be an integer in \[1, 8\]/);
    expect(parseError('self:policy=').message).toMatch(/^self: policy: empty policy spec/);
    expect(parseError('self:policy=streaming(sinks=4)+').message).toMatch(/^self: policy: /);
  });

  it('reserved names', () => {
    expect(parseError('__proto__').message).toBe('"__proto__" is a reserved name and cannot be a drafter id');
    expect(parseError('constructor:gamma=2').message).toBe('"constructor" is a reserved name and cannot be a drafter id');
    expect(parseError('model:__proto__=1').message).toBe('"__proto__" is a reserved name and cannot be a parameter name');
    expect(parseError('model:prototype=1').message).toBe('"prototype" is a reserved name and cannot be a parameter name');
    // nothing leaked onto Object.prototype
    expect(({} as Record<string, unknown>).gamma).toBeUndefined();
  });

  it('a parameter given twice', () => {
    expect(parseError('model:gamma=3,gamma=4').message).toBe('model: parameter "gamma" given twice');
    expect(parseError('self:policy=full,gamma=2,policy=h2o').message).toBe('self: parameter "policy" given twice');
  });

  it('a model id that is not one', () => {
    expect(parseError('model:model=../secret').message).toBe('model: model must be a model id such as kvscope-draft-2l, got "../secret"');
  });

  it('formatting an unknown drafter or a bad parameter fails the same way', () => {
    expect(() => formatDrafter({ id: 'nope', params: {} })).toThrow(new DraftSpecError('unknown drafter "nope"'));
    expect(() => formatDrafter({ id: 'model', params: { gamma: 0 } })).toThrow(DraftSpecError);
    expect(() => formatDrafter({ id: 'model', params: { gamma: 0 } })).toThrow('gamma must be an integer in [1, 32]');
    expect(() => formatDrafter({ id: 'model', params: { gama: 2 } })).toThrow('model: unknown parameter "gama" (did you mean gamma?)');
  });
});
