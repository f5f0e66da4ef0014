/** Small shared types. */

/** A typed array the holder may read but not write (index assignment and mutators are hidden). */
export type ReadonlyTypedArray<T> = Readonly<Omit<T, 'set' | 'fill' | 'copyWithin' | 'sort' | 'reverse'>>;
export type ReadonlyFloat32Array = ReadonlyTypedArray<Float32Array>;
export type ReadonlyInt32Array = ReadonlyTypedArray<Int32Array>;

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
