// Recipes of the files a push must chunk, cut in batches in the order the files travel. The first entries and
// their bytes leave as soon as the first batch is cut, instead of after the whole tree (an initial push of a
// 1 GB workdir otherwise leaves the link idle for seconds while every file is chunked first).

import type { NativeAddon, Tree } from '@skysync/chunking';

export type Recipe = { chunks: Buffer; digest: Buffer };

export interface ToChunk {
  path: string;
  size: number;
  /** The file's previous recipe: unchanged runs are confirmed by hash instead of cut again. */
  hint: Buffer | null;
}

/** The first batch is small so that data starts flowing at once; later ones are larger, to keep every core busy. */
const FIRST_BATCH_BYTES = 8 * 1024 * 1024;
const BATCH_BYTES = 64 * 1024 * 1024;
const BATCH_FILES = 1024;

export class RecipeQueue {
  private readonly results = new Map<string, Recipe | null>();
  private readonly batchOf = new Map<string, Promise<void>>();
  /** Files that could not be read (or changed while read), with why; the remote keeps its copy. */
  readonly unreadable = new Map<string, string>();
  /** Settles when every batch has been cut (never rejects: a failed batch marks its files unreadable). */
  readonly all: Promise<void>;

  constructor(
    private readonly source: string,
    files: ToChunk[],
    private readonly native: NativeAddon,
    private readonly tree: Tree,
  ) {
    let chain: Promise<void> = Promise.resolve();
    let batch: ToChunk[] = [];
    let bytes = 0;
    let limit = FIRST_BATCH_BYTES;
    const close = (): void => {
      if (!batch.length) return;
      const these = batch;
      chain = chain.then(() => this.cut(these));
      for (const f of these) this.batchOf.set(f.path, chain);
      batch = [];
      bytes = 0;
      limit = BATCH_BYTES;
    };
    for (const f of files) {
      // A large file does not hold up the small ones before it: it starts a batch of its own.
      if (batch.length > 0 && bytes + f.size > 2 * limit) close();
      batch.push(f);
      bytes += f.size;
      if (bytes >= limit || batch.length >= BATCH_FILES) close();
    }
    close();
    this.all = chain;
  }

  /** A queue whose work is already done (a single-file push chunks its one file itself): a recipe, or why not. */
  static settled(native: NativeAddon, tree: Tree, results: Map<string, Recipe | string>): RecipeQueue {
    const q = new RecipeQueue('', [], native, tree);
    for (const [p, r] of results) {
      q.results.set(p, typeof r === 'string' ? null : r);
      q.batchOf.set(p, q.all);
      if (typeof r === 'string') q.unreadable.set(p, r);
    }
    return q;
  }

  get size(): number {
    return this.batchOf.size;
  }

  /** Whether `recipe(path)` would answer without waiting for a batch. */
  ready(path: string): boolean {
    return this.results.has(path) || !this.batchOf.has(path);
  }

  has(path: string): boolean {
    return this.batchOf.has(path);
  }

  /** The file's new recipe once its batch is cut; null when it could not be read. */
  async recipe(path: string): Promise<Recipe | null> {
    const got = this.results.get(path);
    if (got !== undefined) return got;
    await this.batchOf.get(path);
    return this.results.get(path) ?? null;
  }

  private async cut(batch: ToChunk[]): Promise<void> {
    const paths = batch.map((f) => f.path);
    const hints = batch.map((f) => f.hint);
    let outcomes: Awaited<ReturnType<NativeAddon['chunkFiles']>>;
    try {
      outcomes = await this.native.chunkFiles(this.source, paths, null, hints.some((h) => h !== null) ? hints : null);
    } catch (e) {
      outcomes = paths.map(() => ({ error: (e as Error).message }) as (typeof outcomes)[number]);
    }
    outcomes.forEach((o, i) => {
      const p = paths[i]!;
      if (o.recipe && this.tree.setRecipe(p, o.recipe.chunks)) {
        this.results.set(p, o.recipe);
      } else {
        this.results.set(p, null);
        this.unreadable.set(p, o.error ? `cannot read it: ${o.error}` : 'changed while it was read');
        this.tree.forget(p);
      }
    });
  }
}
