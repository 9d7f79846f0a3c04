/** A promise with its resolver outside: settled by whoever learns the answer first (later calls do nothing). */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T | Promise<T>) => void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T | Promise<T>) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
