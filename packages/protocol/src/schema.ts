// The shapes of the JSON messages, checked when a message is decoded. Each message is declared once, as a schema;
// its TypeScript type is inferred from that declaration (`Infer`), so the type and the check cannot drift apart.
// A peer's message that does not fit is refused with the message and the field named, never cast and trusted.
// Fields a schema does not name are dropped (a newer peer may send more), and optional fields may be absent.

import { ProtocolError } from './binary.js';

export interface Schema<T> {
  /** What a value must be, for errors: "a string", "an integer", "\"push\" or \"pull\"". */
  readonly expected: string;
  /** Returns the value as T, or throws a ShapeError naming `field` (a dotted path from the message's root). */
  check(value: unknown, field: string): T;
}

/** A schema whose key may be absent from its object. */
export interface OptionalSchema<T> extends Schema<T> {
  readonly optional: true;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends OptionalSchema<unknown> ? K : never }[keyof S];
type Flatten<T> = { [K in keyof T]: T[K] } & {};
export type ObjectOf<S extends Shape> = Flatten<{ [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }>;

/** A value that does not fit its schema: where (`field`, empty at the root) and what it must be. */
export class ShapeError extends Error {
  override name = 'ShapeError';
  constructor(
    readonly field: string,
    readonly expected: string,
  ) {
    super(field ? `field \`${field}\` must be ${expected}` : `must be ${expected}`);
  }
}

function schema<T>(expected: string, test: (v: unknown) => boolean): Schema<T> {
  return {
    expected,
    check(v, field) {
      if (!test(v)) throw new ShapeError(field, expected);
      return v as T;
    },
  };
}

export const string = (): Schema<string> => schema('a string', (v) => typeof v === 'string');
export const boolean = (): Schema<boolean> => schema('a boolean', (v) => typeof v === 'boolean');
/** A finite number (durations). */
export const number = (): Schema<number> => schema('a number', (v) => typeof v === 'number' && Number.isFinite(v));
/** A whole number JavaScript holds exactly. */
export const integer = (): Schema<number> => schema('an integer', (v) => Number.isSafeInteger(v));
/** A whole number from 0: counts, sizes, ports, lane numbers. */
export const count = (): Schema<number> => schema('a whole number from 0', (v) => Number.isSafeInteger(v) && (v as number) >= 0);

/** One of the given strings. */
export function literal<const L extends string>(...values: L[]): Schema<L> {
  const expected = values
    .map((v) => JSON.stringify(v))
    .join(', ')
    .replace(/, ([^,]*)$/, ' or $1');
  return schema(expected, (v) => typeof v === 'string' && (values as string[]).includes(v));
}

export function nullable<T>(inner: Schema<T>): Schema<T | null> {
  return {
    expected: `${inner.expected} or null`,
    check(v, field) {
      if (v === null) return null;
      try {
        return inner.check(v, field);
      } catch (e) {
        // Wrong at this very field: say null would have done too. Wrong deeper inside: that field's own error.
        if (e instanceof ShapeError && e.field === field) throw new ShapeError(field, this.expected);
        throw e;
      }
    },
  };
}

export function optional<T>(inner: Schema<T>): OptionalSchema<T> {
  return {
    expected: inner.expected,
    optional: true,
    check: (v, field) => (v === undefined ? (undefined as T) : inner.check(v, field)),
  };
}

export function array<T>(item: Schema<T>): Schema<T[]> {
  return {
    expected: `a list of ${plural(item.expected)}`,
    check(v, field) {
      if (!Array.isArray(v)) throw new ShapeError(field, this.expected);
      return v.map((x, i) => item.check(x, `${field}[${i}]`));
    },
  };
}

/**
 * A list of names the peer offers (compressions, say), of which only `known` mean anything here: unknown names
 * are dropped rather than refused, so a newer peer's offer still finds what both sides speak.
 */
export function knownNames<const L extends string>(...known: L[]): Schema<L[]> {
  return {
    expected: 'a list of strings',
    check(v, field) {
      if (!Array.isArray(v)) throw new ShapeError(field, this.expected);
      v.forEach((x, i) => {
        if (typeof x !== 'string') throw new ShapeError(`${field}[${i}]`, 'a string');
      });
      return (v as string[]).filter((x): x is L => (known as string[]).includes(x));
    },
  };
}

/** An object with these fields (`what` names it in errors, e.g. "a relay offer"). */
export function object<S extends Shape>(shape: S, what = 'an object'): Schema<ObjectOf<S>> {
  return {
    expected: what,
    check(v, field) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ShapeError(field, what);
      const o = v as Record<string, unknown>;
      // A fresh object of the declared fields only: what else the peer sent goes no further.
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(shape)) {
        // Own keys only: a key inherited from Object.prototype ("constructor") is not a field the peer sent.
        const value = Object.hasOwn(o, key) ? o[key] : undefined;
        const checked = shape[key]!.check(value, field ? `${field}.${key}` : key);
        if (checked !== undefined) out[key] = checked;
      }
      return out as ObjectOf<S>;
    },
  };
}

/** An object used as a map from names to values of one shape (request headers); only its own keys are read. */
export function record<T>(value: Schema<T>): Schema<Record<string, T>> {
  return {
    expected: `an object of ${plural(value.expected)}`,
    check(v, field) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ShapeError(field, this.expected);
      const out: Record<string, T> = Object.create(null) as Record<string, T>;
      for (const key of Object.keys(v)) out[key] = value.check((v as Record<string, unknown>)[key], field ? `${field}.${key}` : key);
      return out;
    },
  };
}

/** The first alternative that fits. */
export function either<A, B>(a: Schema<A>, b: Schema<B>): Schema<A | B> {
  return {
    expected: `${a.expected} or ${b.expected}`,
    check(v, field) {
      try {
        return a.check(v, field);
      } catch (e) {
        if (!(e instanceof ShapeError)) throw e;
      }
      try {
        return b.check(v, field);
      } catch (e) {
        if (!(e instanceof ShapeError)) throw e;
        throw new ShapeError(field, this.expected);
      }
    },
  };
}

/** Objects told apart by one string field (`op`), each variant with its own shape. */
export function variants<const K extends string, V extends Record<string, Schema<object>>>(key: K, byValue: V): Schema<{ [T in keyof V]: Infer<V[T]> }[keyof V]> {
  const tag = literal(...(Object.keys(byValue) as string[]));
  return {
    expected: 'an object',
    check(v, field) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ShapeError(field, 'an object');
      const which = tag.check((v as Record<string, unknown>)[key], field ? `${field}.${key}` : key);
      return byValue[which]!.check(v, field) as { [T in keyof V]: Infer<V[T]> }[keyof V];
    },
  };
}

/** "a whole number from 0" -> "whole numbers from 0", "a string or null" -> "strings or nulls". */
function plural(expected: string): string {
  return expected
    .split(' or ')
    .map((one) => one.replace(/^an? /, '').replace(/^(.+?)( from .*)?$/, (_, noun: string, rest = '') => `${noun}s${rest}`))
    .join(' or ');
}

/** A JSON message: its name (for errors) and its shape. */
export interface Message<T> extends Schema<T> {
  readonly name: string;
  /** Parses and checks a frame's payload; a malformed one throws a ProtocolError naming the message and field. */
  decode(payload: Buffer): T;
}

export function message<T>(name: string, shape: Schema<T>): Message<T> {
  const check = (v: unknown): T => {
    try {
      return shape.check(v, '');
    } catch (e) {
      if (e instanceof ShapeError) throw new ProtocolError(`bad ${name} message: ${e.message}`);
      throw e;
    }
  };
  return {
    name,
    expected: shape.expected,
    check,
    decode(payload) {
      let v: unknown;
      try {
        v = JSON.parse(payload.toString('utf8'));
      } catch {
        throw new ProtocolError(`bad ${name} message: not JSON`);
      }
      return check(v);
    },
  };
}
