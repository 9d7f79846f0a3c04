/** `run` over `items` with at most `limit` at once; results in the items' order; the first failure rejects. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, run: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await run(items[index]!, index);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * How long a request to a store may go without a byte either way before it is given up (and tried again, as the
 * SDK retries): an endpoint that accepts connections but never answers must not hang a launch. SKYSYNC_STORE_TIMEOUT
 * (seconds) overrides the default of 60.
 */
export function storeTimeoutMs(): number {
  const s = Number(process.env.SKYSYNC_STORE_TIMEOUT);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 60_000;
}
