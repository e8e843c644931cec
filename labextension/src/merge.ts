/**
 * The `metadata.tactus` round trip, as pure functions: no JupyterLab import,
 * so the unit tests run them under plain Node.
 *
 * The kernel is the source of truth while it runs; the notebook's
 * `metadata.tactus` is the durable copy. The kernel sends ops on the `tactus`
 * comm and `applyOp` folds each one into the stored block:
 *
 *   {"op": "update", "procedures": {KEY: record}}  replace those records
 *   {"op": "delete", "procedures": [KEY, ...]}     remove them
 *   {"op": "warning", "message": "..."}            show it
 *
 * Unknown ops are ignored. A stored block that the kernel cannot use (see
 * `metadataProblem`, which mirrors the kernel's schema) is never written
 * over by updates: they are held back, and only a reset (a `delete` op,
 * which the kernel sends only when someone asked for a reset) replaces the
 * block with what the kernel holds.
 */

export const SCHEMA_VERSION = 1;

/** One recorded call. Fields other than these are kept as they are. */
export interface ICheckpointEntry {
  kind: string;
  name: string;
  value?: unknown;
  at: string;
  [extra: string]: unknown;
}

/** Everything the kernel records about one procedure. */
export interface IProcedureRecord {
  checkpoints: ICheckpointEntry[];
  status?: string;
  [extra: string]: unknown;
}

/** The `metadata.tactus` block. */
export interface ITactusMetadata {
  version: number;
  procedures: { [key: string]: IProcedureRecord };
  [extra: string]: unknown;
}

export type HeldRecords = { [key: string]: IProcedureRecord };

/** What applying one kernel op means for the notebook. */
export interface IApplyResult {
  /** True when `metadata` must be written into the notebook. */
  changed: boolean;
  /** The new block; set only when `changed`. */
  metadata?: ITactusMetadata;
  /** Updates held back while the stored block is unusable. */
  held: HeldRecords;
  /** Procedure keys this op touched (for a "changed since save" count). */
  touched: string[];
  /** Why the stored block cannot be used, when it cannot. */
  problem?: string;
  /** True when an unusable block was replaced after a reset. */
  replaced?: boolean;
  /** A message the kernel asked us to show. */
  warning?: string;
}

export function emptyMetadata(): ITactusMetadata {
  return { version: SCHEMA_VERSION, procedures: {} };
}

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? text.slice(0, 57) + '...' : text;
}

/**
 * Why the kernel would refuse this `metadata.tactus` block, or null when it
 * is usable (an absent block is usable: it means "nothing recorded").
 * Mirrors the kernel's pydantic model (tactus_kernel/engine/records.py).
 */
export function metadataProblem(block: unknown): string | null {
  if (block === undefined || block === null) {
    return null;
  }
  if (!isObject(block)) {
    return `metadata.tactus must be an object (found ${describe(block)})`;
  }
  if (block.version !== SCHEMA_VERSION) {
    return `metadata.tactus.version must be ${SCHEMA_VERSION} (found ${describe(block.version)})`;
  }
  if (block.procedures === undefined) {
    return null;
  }
  if (!isObject(block.procedures)) {
    return `metadata.tactus.procedures must be an object (found ${describe(block.procedures)})`;
  }
  for (const [key, record] of Object.entries(block.procedures)) {
    const where = `metadata.tactus.procedures.${key}`;
    if (!isObject(record)) {
      return `${where} must be an object (found ${describe(record)})`;
    }
    if (record.checkpoints === undefined) {
      continue;
    }
    if (!Array.isArray(record.checkpoints)) {
      return `${where}.checkpoints must be a list (found ${describe(record.checkpoints)})`;
    }
    for (let i = 0; i < record.checkpoints.length; i++) {
      const entry: unknown = record.checkpoints[i];
      if (!isObject(entry)) {
        return `${where}.checkpoints.${i} must be an object (found ${describe(entry)})`;
      }
      for (const field of ['kind', 'name', 'at']) {
        if (typeof entry[field] !== 'string') {
          return `${where}.checkpoints.${i}.${field} must be a string (found ${describe(entry[field])})`;
        }
      }
    }
  }
  return null;
}

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/**
 * Procedure keys are any text the kernel accepts, `__proto__` and
 * `constructor` included: read and write them as own properties only (a
 * plain `obj[key] = v` with `__proto__` sets the prototype and the record
 * is silently lost).
 */
function getOwn<T>(obj: { [key: string]: T }, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

function setOwn<T>(obj: { [key: string]: T }, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/** Deep equality of JSON values (key order does not matter). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) {
    return true;
  }
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every(k => Object.prototype.hasOwnProperty.call(b, k) && jsonEqual(getOwn(a, k), getOwn(b, k)));
  }
  return false;
}

/** The block as an editable copy, with a `procedures` object. */
function editable(block: unknown): ITactusMetadata {
  if (block === undefined || block === null) {
    return emptyMetadata();
  }
  const copy = clone(block) as ITactusMetadata;
  if (!isObject(copy.procedures)) {
    copy.procedures = {};
  }
  return copy;
}

/**
 * Fold one comm message from the kernel into the stored block.
 *
 * `stored` is the notebook's current `metadata.tactus` (undefined when
 * absent); `held` is what earlier updates left held back. Nothing here
 * mutates its arguments.
 */
export function applyOp(stored: unknown, op: unknown, held: HeldRecords = {}): IApplyResult {
  const unchanged: IApplyResult = { changed: false, held, touched: [] };
  if (!isObject(op) || typeof op.op !== 'string') {
    return unchanged;
  }
  if (op.op === 'warning') {
    return typeof op.message === 'string' && op.message ? { ...unchanged, warning: op.message } : unchanged;
  }
  const problem = metadataProblem(stored);

  if (op.op === 'update') {
    if (!isObject(op.procedures)) {
      return unchanged;
    }
    const records = Object.entries(op.procedures).filter((kv): kv is [string, IProcedureRecord] => isObject(kv[1]));
    if (records.length === 0) {
      return unchanged;
    }
    const touched = records.map(([key]) => key);
    if (problem !== null) {
      const next: HeldRecords = { ...held };
      for (const [key, record] of records) {
        setOwn(next, key, clone(record));
      }
      return { changed: false, held: next, touched, problem };
    }
    const block = editable(stored);
    let changed = stored === undefined || stored === null;
    for (const [key, record] of records) {
      if (!jsonEqual(getOwn(block.procedures, key), record)) {
        setOwn(block.procedures, key, clone(record));
        changed = true;
      }
    }
    return changed ? { changed, metadata: block, held, touched } : { ...unchanged, touched };
  }

  if (op.op === 'delete') {
    if (!Array.isArray(op.procedures)) {
      return unchanged;
    }
    const keys = op.procedures.filter((k): k is string => typeof k === 'string');
    if (problem !== null) {
      // Someone reset the kernel's records: the kernel's message promised
      // that this is when the unusable block gets replaced.
      const next: HeldRecords = { ...held };
      for (const key of keys) {
        delete next[key];
      }
      return {
        changed: true,
        metadata: { version: SCHEMA_VERSION, procedures: next },
        held: {},
        touched: keys,
        problem,
        replaced: true
      };
    }
    if (stored === undefined || stored === null) {
      return unchanged;
    }
    const block = editable(stored);
    const gone = keys.filter(k => Object.prototype.hasOwnProperty.call(block.procedures, k));
    for (const key of gone) {
      delete block.procedures[key];
    }
    return gone.length ? { changed: true, metadata: block, held, touched: gone } : unchanged;
  }

  return unchanged;
}

/** One procedure, ready to show. */
export interface IProcedureSummary {
  key: string;
  status: string;
  count: number;
  last: string;
  checkpoints: ICheckpointEntry[];
}

/** The procedures of a usable block, sorted by key. */
export function summarize(block: unknown): IProcedureSummary[] {
  if (metadataProblem(block) !== null || !isObject(block) || !isObject(block.procedures)) {
    return [];
  }
  return Object.keys(block.procedures)
    .sort()
    .map(key => {
      const record = (block.procedures as { [key: string]: IProcedureRecord })[key];
      const checkpoints = Array.isArray(record.checkpoints) ? record.checkpoints : [];
      const last = checkpoints.reduce((max, entry) => (entry.at > max ? entry.at : max), '');
      return {
        key,
        status: typeof record.status === 'string' ? record.status : '',
        count: checkpoints.length,
        last,
        checkpoints
      };
    });
}

/** Total checkpoints in a usable block. */
export function countCheckpoints(block: unknown): number {
  return summarize(block).reduce((n, p) => n + p.count, 0);
}

/** A one-line JSON preview of a recorded value. */
export function preview(value: unknown, max = 80): string {
  let text: string;
  if (value === undefined) {
    text = 'null';
  } else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  text = text.replace(/\s+/g, ' ');
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/** Whether a kernel (by spec name and language) is a Tactus kernel. */
export function isTactusKernel(name: string | undefined | null, language: string | undefined | null): boolean {
  return name === 'tactus' || (typeof language === 'string' && language.toLowerCase() === 'lua');
}

/** The reset op the frontend sends: some procedures, or (no keys) all. */
export function resetOp(
  keys?: string[],
  from?: { [key: string]: number }
): { op: 'reset'; procedures?: string[]; from?: { [key: string]: number } } {
  if (keys === undefined) {
    return { op: 'reset' };
  }
  return from === undefined ? { op: 'reset', procedures: [...keys] } : { op: 'reset', procedures: [...keys], from: { ...from } };
}

/** True when a kernel op answers a reset of `key` (an update or a delete naming it, or its root). */
export function answersReset(op: unknown, key: string): boolean {
  if (!isObject(op)) {
    return false;
  }
  const root = key.split('/')[0];
  if (op.op === 'update' && isObject(op.procedures)) {
    return root in op.procedures;
  }
  if (op.op === 'delete' && Array.isArray(op.procedures)) {
    return op.procedures.includes(key) || op.procedures.includes(root);
  }
  return false;
}
