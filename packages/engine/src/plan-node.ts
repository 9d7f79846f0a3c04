// Planning one node: which entries it gets (from the shared scan, or everything when its state is unknown), in
// travel order, each made when its recipe is cut.

import type { DeleteMode, PlanEntry, PushState } from '@skysync/protocol';
import { Planner, type LiteralRef } from './plan.js';
import type { Recipe } from './recipes.js';
import type { SyncState } from './state.js';
import { byPath, comparePaths, travelOrder } from './order.js';
import type { Change, Tree } from '@skysync/chunking';

type Entry = Change['entry'];
import type { Prepared } from './prepare.js';
import type { PushEvent } from './stats.js';

/** Entries per frame, and at most this many made ahead while streaming. */
export const BATCH_ENTRIES = 512;

/** A plan entry and the ranges of its local file whose bytes travel with it. */
export interface Made {
  entry: PlanEntry;
  literals: LiteralRef[];
}

interface Pending {
  path: string;
  size?: number;
  make: () => Promise<Made | null>;
}

type FileMeta = { path: string; mode: number; size: number; mtimeSec: number; mtimeNsec: number };

export interface NodePlanInput {
  prepared: Prepared;
  remoteState: PushState;
  state: SyncState;
  /** The node was left at the tree the scan ran against. */
  inBase: boolean;
  deleteMode: DeleteMode;
  /**
   * Tell the agent what the source has but could not read (keep entries), so that `--delete` removes nothing
   * there: rsync, too, deletes nothing after a read error.
   */
  keepUnreadable?: boolean;
  emit: (e: PushEvent) => void;
}

/**
 * One node's plan. Files are planned in the order they travel: the first file to use a chunk carries its bytes,
 * and the receiver expects them at that file's place in the stream. Entries are made one after another, as the
 * recipes they need are cut; one that turns out to have nothing to send (unreadable, or only a racy re-check of
 * the same bytes) makes nothing.
 */
export class NodePlan {
  /** The remote is where the scan's base left it: the scan's changes are all it needs. */
  readonly baseValid: boolean;
  /** Literal bytes follow their entries without asking; otherwise the agent says which chunks it lacks. */
  readonly dataMode: boolean;
  /** Files the remote changed behind our back: the local version wins. */
  readonly drift: Set<string>;
  /** What this node is told: the scan's changes, or (its state unknown) every entry plus its deletions. */
  readonly changes: Change[];
  chunksReused = 0;
  chunksLiteral = 0;
  filesChanged = 0;
  filesDeleted = 0;
  /** Literal bytes this plan sends: exact once every entry is made, before that each unplanned file counts its size. */
  bytesPlanned = 0;
  /** Every entry made, as a dry run lists it. */
  readonly listed: Array<{ status: string; path: string; kind: string }> = [];
  private readonly tree: Tree;
  private readonly base: Tree | null;
  private readonly planner: Planner;
  private readonly ordered: Pending[];
  private cursor = 0;

  constructor(private readonly o: NodePlanInput) {
    const { prepared, remoteState, state } = o;
    this.tree = prepared.tree;
    const stateValid = state.tree !== null && remoteState.generation !== null && remoteState.generation === state.generation;
    // A node left at a tree of its own (it missed a push, or alone got one): its changes are against that tree.
    const ownTree = stateValid && !o.inBase && prepared.base !== null;
    this.baseValid = stateValid && (o.inBase || ownTree);
    // An agent that holds nothing here (a fresh node) has nothing to find by id: send data without asking.
    this.dataMode = this.baseValid || remoteState.held === 0;
    this.changes = ownTree ? treeChanges(state.tree!, prepared.tree) : this.baseValid || !prepared.base ? prepared.changes : this.everything();
    this.base = ownTree ? state.tree : this.baseValid ? prepared.base : null;
    this.drift = new Set(this.baseValid ? remoteState.drift : []);
    this.planner = new Planner(this.base, this.drift);
    this.ordered = travelOrder(this.pending().sort((a, b) => comparePaths(a.path, b.path)));
    this.bytesPlanned = this.ordered.reduce((a, p) => a + (p.size ?? 0), 0);
  }

  /** Entries in all, made or not. */
  get total(): number {
    return this.ordered.length;
  }

  /** A file's recipe: cut by this push, or as the tree already holds it. */
  recipeOf(p: string): Promise<Recipe | null> | Recipe | null {
    const recipes = this.o.prepared.recipes;
    return recipes.has(p) ? recipes.recipe(p) : this.tree.recipe(p);
  }

  /**
   * Makes the next entries: all of them, or (streaming) up to `BATCH_ENTRIES` and no further than the first one
   * whose recipe is still being cut once some are made: those travel now rather than wait.
   */
  async next(streaming: boolean): Promise<Made[]> {
    const out: Made[] = [];
    while (this.cursor < this.ordered.length && (!streaming || out.length < BATCH_ENTRIES)) {
      if (streaming && out.length > 0 && !this.o.prepared.recipes.ready(this.ordered[this.cursor]!.path)) break;
      const m = await this.ordered[this.cursor++]!.make();
      if (m) out.push(m);
    }
    return out;
  }

  /**
   * The remote is not where the scan's base left it (another client, a lost state, a node that missed a push):
   * describe everything, and let the agent find the chunks it already has. Deletions are what this node was last
   * given and the source no longer has.
   */
  private everything(): Change[] {
    const { prepared, state, inBase } = this.o;
    const tree = this.tree;
    const deleted: Change[] = inBase
      ? prepared.changes.filter((c) => c.status === 'deleted')
      : (state.tree?.entries() ?? []).filter((e) => !tree.entry(e.path)).map((entry) => ({ status: 'deleted' as const, entry }));
    const changes: Change[] = tree.entries().map((entry) => ({ status: 'added' as const, entry }));
    changes.push(...deleted);
    return changes.sort(byPath);
  }

  private pending(): Pending[] {
    const deleteMode = this.o.deleteMode;
    const pending: Pending[] = [];
    const seen = new Set<string>();
    for (const c of this.changes) {
      const e = c.entry;
      seen.add(e.path);
      if (c.status === 'deleted') {
        pending.push({ path: e.path, make: this.fixed({ kind: 'delete', path: e.path, forgetOnly: deleteMode === 'none' }, 'deleted', e.kind, false) });
        if (deleteMode !== 'none') this.filesDeleted++;
      } else if (e.kind === 'dir') {
        // A directory the scan could not list is left as the remote has it: given its mode (often none at all),
        // the remote could no longer be looked into, by the agent or by jobs.
        if (this.o.prepared.unreadable.has(e.path)) continue;
        pending.push({ path: e.path, make: this.fixed({ kind: 'dir', path: e.path, mode: e.mode }, c.status, 'dir', false) });
      } else if (e.kind === 'symlink') {
        pending.push({ path: e.path, make: this.fixed({ kind: 'symlink', path: e.path, target: e.target! }, c.status, 'symlink', true) });
      } else {
        pending.push({ path: e.path, size: e.size, make: this.planned(e, c.status, c.prevRecipe ?? null, c.prevKind) });
      }
    }
    for (const p of this.drift) {
      if (seen.has(p)) continue;
      const e = this.tree.entry(p);
      if (!e) continue;
      if (e.kind === 'symlink') pending.push({ path: p, make: this.fixed({ kind: 'symlink', path: p, target: e.target! }, 'drifted', 'symlink', true) });
      else if (e.kind === 'file') pending.push({ path: p, size: e.size, make: this.planned(e, 'drifted', null, undefined) });
    }
    if (this.o.keepUnreadable) {
      for (const p of this.o.prepared.unreadable.keys()) pending.push({ path: p, make: async () => ({ entry: { kind: 'keep', path: p }, literals: [] }) });
    }
    return pending;
  }

  private list(status: string, p: string, kind: string): void {
    const l = { status, path: p, kind };
    this.listed.push(l);
    this.o.emit({ type: 'change', ...l });
  }

  private fixed(entry: PlanEntry, status: string, kind: string, counts: boolean) {
    return async (): Promise<Made> => {
      if (counts) this.filesChanged++;
      this.list(status, entry.path, kind);
      return { entry, literals: [] };
    };
  }

  private planned(e: FileMeta, status: string, prevRecipe: Recipe | null, prevKind: string | undefined) {
    return async (): Promise<Made | null> => {
      const r = await this.recipeOf(e.path);
      this.bytesPlanned -= e.size;
      if (!r) return this.o.keepUnreadable ? { entry: { kind: 'keep', path: e.path }, literals: [] } : null;
      const prev = prevRecipe && !this.drift.has(e.path) && this.baseValid ? prevRecipe : null;
      // Same content, same metadata (a racy re-check, or only ctime moved): nothing to send.
      if (prev?.digest.equals(r.digest) && prevKind === 'file') {
        const before = this.base?.entry(e.path);
        if (before && before.mode === e.mode && before.mtimeSec === e.mtimeSec && before.mtimeNsec === e.mtimeNsec) return null;
      }
      const fp = this.planner.planFile(e.path, r.chunks, prev?.chunks ?? null);
      this.bytesPlanned += fp.literals.reduce((a, l) => a + l.len, 0);
      this.chunksReused += fp.reused;
      this.chunksLiteral += fp.literals.length;
      this.filesChanged++;
      this.list(status, e.path, 'file');
      return {
        entry: { kind: 'file' as const, path: e.path, mode: e.mode, size: e.size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, digest: r.digest, ops: fp.ops },
        literals: fp.literals,
      };
    };
  }
}

function sameEntry(a: Entry, b: Entry): boolean {
  if (a.kind !== b.kind || a.mode !== b.mode) return false;
  // A directory's times are left aside, as the scan's own compare does.
  if (a.kind === 'dir') return true;
  return a.size === b.size && a.mtimeSec === b.mtimeSec && a.mtimeNsec === b.mtimeNsec && a.target === b.target;
}

/** What changed from `before` (a node's own last tree) to `now` (the scan), as the scan reports it against its base. */
export function treeChanges(before: Tree, now: Tree): Change[] {
  const changes: Change[] = [];
  for (const entry of now.entries()) {
    const prev = before.entry(entry.path);
    const prevRecipe = prev?.kind === 'file' ? before.recipe(entry.path) : null;
    // A file without a recipe was forgotten (its push failed): it travels again.
    if (prev && sameEntry(prev, entry) && (prev.kind !== 'file' || prevRecipe)) continue;
    const status = !prev ? 'added' : prev.kind !== entry.kind ? 'typechanged' : 'modified';
    changes.push({ status, entry, ...(prev ? { prevKind: prev.kind } : {}), ...(prevRecipe ? { prevRecipe } : {}) });
  }
  for (const entry of before.entries()) if (!now.entry(entry.path)) changes.push({ status: 'deleted', entry });
  return changes.sort(byPath);
}
