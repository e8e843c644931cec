/**
 * The `metadata.tactus` round trip, as pure functions: no JupyterLab import,
 * so the unit tests run them under plain Node.
 *
 * The kernel is the source of truth while it runs; the notebook's
 * `metadata.tactus` is the durable copy. The kernel sends ops on the `tactus`
 * comm and `applyOp` folds each one into the stored block:
 *
 *   {"op": "update", "procedures": {KEY: record}}  replace those records
 *   {"op": "append", "procedures": {PATH: {"from": N, "checkpoints": [...], FIELD: VALUE}}}
 *       (protocol 1.1) keep the first N checkpoints of the record at PATH
 *       (a key, or "root/child#1" for a child's record in `children`),
 *       add these, set these fields
 *   {"op": "delete", "procedures": [KEY, ...]}     remove them
 *   {"op": "warning", "message": "..."}            show it
 *
 * Unknown ops are ignored, and so is an op whose `protocol` has a major
 * version this extension does not know (`ignored` says why). The Python
 * twin of `applyOp` is `fold_op` in tactus_kernel/protocol.py. A stored block that the kernel cannot use (see
 * `metadataProblem`, which mirrors the kernel's schema) is never written
 * over by updates: they are held back, and only a reset (a `delete` op,
 * which the kernel sends only when someone asked for a reset) replaces the
 * block with what the kernel holds.
 */

import { describe, isObject, PROTOCOL, protocolMajor, schemaProblem } from './schema';

export { PROTOCOL };

export const SCHEMA_VERSION = 1;

/** One recorded call. Fields other than these are kept as they are. */
export interface ICheckpointEntry {
  kind: string;
  name: string;
  value: unknown; // required, null is a value (the schema: src/schema/metadata.schema.json)
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
  /** Why the op was ignored (an unknown protocol major version). */
  ignored?: string;
}

export function emptyMetadata(): ITactusMetadata {
  return { version: SCHEMA_VERSION, procedures: {} };
}

/**
 * Why the kernel would refuse this `metadata.tactus` block, or null when it
 * is usable (an absent block is usable: it means "nothing recorded").
 * Checked by the JSON Schema of the kernel's own models (schema.ts), so the
 * two cannot disagree: an entry without `value` is refused on both sides.
 */
export function metadataProblem(block: unknown): string | null {
  return schemaProblem(block);
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
  const major = protocolMajor(op.protocol);
  if (major !== 1) {
    return {
      ...unchanged,
      ignored:
        `Tactus: ignored a '${op.op}' op of protocol ${describe(op.protocol)}: this extension speaks ` +
        `protocol ${PROTOCOL}; update the extension or the kernel so their major versions match.`
    };
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

  if (op.op === 'append') {
    if (!isObject(op.procedures)) {
      return unchanged;
    }
    const changes = Object.entries(op.procedures).filter((kv): kv is [string, { [key: string]: unknown }] =>
      isObject(kv[1])
    );
    if (changes.length === 0) {
      return unchanged;
    }
    const touched = [...new Set(changes.map(([path]) => path.split('/')[0]))];
    if (problem !== null) {
      const next: HeldRecords = { ...held };
      for (const [path, change] of changes) {
        foldAppend(next, path, change);
      }
      return { changed: false, held: next, touched, problem };
    }
    const block: ITactusMetadata =
      stored === undefined || stored === null ? emptyMetadata() : { ...(stored as ITactusMetadata) };
    block.procedures = isObject(block.procedures) ? { ...block.procedures } : {};
    for (const [path, change] of changes) {
      foldAppend(block.procedures, path, change);
    }
    return { changed: true, metadata: block, held, touched };
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

/**
 * Fold one `append` change into `procedures` (a copy the caller owns): the
 * records along `path` are copied before they change, so what the caller
 * was given (the notebook's block, the op) is never mutated, and the
 * checkpoints kept are shared, not cloned (a record of 50,000 checkpoints
 * costs a slice, not a deep copy, per op).
 */
function foldAppend(procedures: { [key: string]: IProcedureRecord }, path: string, change: { [key: string]: unknown }): void {
  const [root, ...rest] = path.split('/');
  const copyOf = (rec: unknown): IProcedureRecord =>
    isObject(rec) ? ({ ...rec } as IProcedureRecord) : { checkpoints: [] };
  let node = copyOf(getOwn(procedures, root));
  setOwn(procedures, root, node);
  for (const part of rest) {
    const children: { [key: string]: IProcedureRecord } = isObject(node.children)
      ? { ...(node.children as { [key: string]: IProcedureRecord }) }
      : {};
    node.children = children;
    const child = copyOf(getOwn(children, part));
    setOwn(children, part, child);
    node = child;
  }
  for (const [field, value] of Object.entries(change)) {
    if (field === 'from') {
      continue;
    }
    if (field === 'checkpoints') {
      const start = typeof change.from === 'number' ? change.from : 0;
      const old = Array.isArray(node.checkpoints) ? node.checkpoints.slice(0, start) : [];
      node.checkpoints = old.concat(Array.isArray(value) ? clone(value) : []);
    } else {
      setOwn(node as { [key: string]: unknown }, field, clone(value));
    }
  }
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
  if (op.op === 'append' && isObject(op.procedures)) {
    return Object.keys(op.procedures).some(path => path.split('/')[0] === root);
  }
  if (op.op === 'delete' && Array.isArray(op.procedures)) {
    return op.procedures.includes(key) || op.procedures.includes(root);
  }
  return false;
}
