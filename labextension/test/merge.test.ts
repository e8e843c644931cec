/**
 * Unit tests of the metadata merge logic (node:test; run by `npm test`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  answersReset,
  applyOp,
  countCheckpoints,
  IProcedureRecord,
  isTactusKernel,
  jsonEqual,
  metadataProblem,
  preview,
  resetOp,
  summarize
} from '../src/merge';

const AT = '2026-01-01T00:00:00.000Z';

function rec(value: unknown, extra: { [k: string]: unknown } = {}): IProcedureRecord {
  return { checkpoints: [{ kind: 'step', name: 'pick', value, at: AT }], status: 'completed', ...extra };
}

test('an update creates the block when the notebook has none', () => {
  const r = applyOp(undefined, { op: 'update', procedures: { demo: rec(42) } });
  assert.equal(r.changed, true);
  assert.deepEqual(r.metadata, { version: 1, procedures: { demo: rec(42) } });
  assert.deepEqual(r.touched, ['demo']);
});

test('a null block (as the comm sends it) counts as absent', () => {
  const r = applyOp(null, { op: 'update', procedures: { demo: rec(1) } });
  assert.deepEqual(r.metadata, { version: 1, procedures: { demo: rec(1) } });
});

test('an update replaces whole records and keeps the others and extra fields', () => {
  const stored = {
    version: 1,
    note: 'kept',
    procedures: { demo: rec(1, { params: { a: 1 } }), other: rec('x') }
  };
  const r = applyOp(stored, { op: 'update', procedures: { demo: rec(2) } });
  assert.equal(r.changed, true);
  assert.deepEqual(r.metadata, { version: 1, note: 'kept', procedures: { demo: rec(2), other: rec('x') } });
  // whole record replaced: the old params are gone
  assert.equal('params' in (r.metadata!.procedures.demo as object), false);
});

test('applyOp never mutates what it is given', () => {
  const stored = { version: 1, procedures: { demo: rec(1) } };
  const op = { op: 'update', procedures: { demo: rec(2) } };
  const before = JSON.stringify([stored, op]);
  const r = applyOp(stored, op);
  r.metadata!.procedures.demo.checkpoints.push({ kind: 'step', name: 'x', value: 1, at: AT });
  assert.equal(JSON.stringify([stored, op]), before);
});

test('an update that changes nothing is not a change', () => {
  const stored = { version: 1, procedures: { demo: rec(1) } };
  const r = applyOp(stored, { op: 'update', procedures: { demo: JSON.parse(JSON.stringify(rec(1))) } });
  assert.equal(r.changed, false);
  assert.equal(r.metadata, undefined);
});

test('a delete removes the named records and leaves an empty block', () => {
  const stored = { version: 1, procedures: { demo: rec(1), other: rec(2) } };
  let r = applyOp(stored, { op: 'delete', procedures: ['demo', 'unknown'] });
  assert.equal(r.changed, true);
  assert.deepEqual(r.metadata, { version: 1, procedures: { other: rec(2) } });
  assert.deepEqual(r.touched, ['demo']);
  r = applyOp(r.metadata, { op: 'delete', procedures: ['other'] });
  assert.deepEqual(r.metadata, { version: 1, procedures: {} });
});

test('a delete of unknown keys, or with no block, changes nothing', () => {
  assert.equal(applyOp({ version: 1, procedures: { a: rec(1) } }, { op: 'delete', procedures: ['b'] }).changed, false);
  assert.equal(applyOp(undefined, { op: 'delete', procedures: ['b'] }).changed, false);
  assert.equal(applyOp(undefined, { op: 'delete', procedures: [] }).changed, false);
});

test('warnings are passed on, unknown and malformed ops are ignored', () => {
  const stored = { version: 1, procedures: { demo: rec(1) } };
  assert.equal(applyOp(stored, { op: 'warning', message: 'careful' }).warning, 'careful');
  for (const op of [
    { op: 'frobnicate', procedures: { demo: rec(3) } },
    { op: 'update', procedures: ['demo'] },
    { op: 'update', procedures: { demo: 'not a record' } },
    { op: 'delete', procedures: 'demo' },
    { op: 'warning' },
    { procedures: {} },
    null,
    'update',
    42
  ]) {
    const r = applyOp(stored, op);
    assert.equal(r.changed, false, JSON.stringify(op));
    assert.equal(r.metadata, undefined);
  }
});

test('metadataProblem mirrors the kernel schema', () => {
  assert.equal(metadataProblem(undefined), null);
  assert.equal(metadataProblem(null), null);
  assert.equal(metadataProblem({ version: 1 }), null);
  assert.equal(metadataProblem({ version: 1, procedures: { a: {} } }), null);
  assert.equal(metadataProblem({ version: 1, procedures: { a: rec({ deep: [1, 2] }) } }), null);
  assert.match(metadataProblem({ version: 99, procedures: 'nope' })!, /version must be 1/);
  assert.match(metadataProblem({ version: 1, procedures: 'nope' })!, /procedures must be an object/);
  assert.match(metadataProblem([1])!, /must be an object/);
  assert.match(metadataProblem({ version: 1, procedures: { a: { checkpoints: {} } } })!, /a\.checkpoints must be a list/);
  assert.match(
    metadataProblem({ version: 1, procedures: { a: { checkpoints: [{ kind: 'step', name: 'n' }] } } })!,
    /a\.checkpoints\.0\.value is required/
  );
  assert.match(
    metadataProblem({ version: 1, procedures: { a: { checkpoints: [{ kind: 'step', name: 'n', value: 1 }] } } })!,
    /a\.checkpoints\.0\.at is required/
  );
  assert.match(
    metadataProblem({ version: 1, procedures: { a: { checkpoints: [{ kind: 'step', name: 'n', value: 1, at: 5 }] } } })!,
    /a\.checkpoints\.0\.at must be a string/
  );
  assert.match(
    metadataProblem({ version: 1, procedures: { a: { checkpoints: [{ kind: 'step', name: 3, at: AT }] } } })!,
    /name must be a string/
  );
});

test('updates never write over an unusable block: they are held back', () => {
  const corrupt = { version: 99, procedures: 'nope' };
  let r = applyOp(corrupt, { op: 'update', procedures: { demo: rec(1) } });
  assert.equal(r.changed, false);
  assert.equal(r.metadata, undefined);
  assert.match(r.problem!, /version/);
  assert.deepEqual(r.held, { demo: rec(1) });
  r = applyOp(corrupt, { op: 'update', procedures: { other: rec(2) } }, r.held);
  assert.deepEqual(Object.keys(r.held).sort(), ['demo', 'other']);
  assert.deepEqual(corrupt, { version: 99, procedures: 'nope' });
});

test('a reset (delete op) replaces an unusable block with what the kernel holds', () => {
  const corrupt = { version: 99, procedures: 'nope' };
  const held = { demo: rec(1), other: rec(2) };
  let r = applyOp(corrupt, { op: 'delete', procedures: ['demo'] }, held);
  assert.equal(r.changed, true);
  assert.equal(r.replaced, true);
  assert.deepEqual(r.metadata, { version: 1, procedures: { other: rec(2) } });
  assert.deepEqual(r.held, {});
  // a reset of everything with nothing held leaves a fresh, empty block
  r = applyOp(corrupt, { op: 'delete', procedures: [] });
  assert.deepEqual(r.metadata, { version: 1, procedures: {} });
});

test('summaries, counts and previews for the dialog', () => {
  const block = {
    version: 1,
    procedures: {
      zeta: { checkpoints: [] },
      alpha: {
        status: 'running',
        checkpoints: [
          { kind: 'step', name: 'a', value: 1, at: '2026-01-01T00:00:01.000Z' },
          { kind: 'human', name: 'Ship it?', value: true, at: '2026-01-01T00:00:03.000Z', request: 'approve' },
          { kind: 'step', name: 'b', value: null, at: '2026-01-01T00:00:02.000Z' }
        ]
      }
    }
  };
  const s = summarize(block);
  assert.deepEqual(
    s.map(p => [p.key, p.status, p.count, p.last]),
    [
      ['alpha', 'running', 3, '2026-01-01T00:00:03.000Z'],
      ['zeta', '', 0, '']
    ]
  );
  assert.equal(countCheckpoints(block), 3);
  assert.deepEqual(summarize({ version: 2 }), []);
  assert.equal(countCheckpoints(undefined), 0);
  assert.equal(preview({ a: [1, 2] }), '{"a":[1,2]}');
  assert.equal(preview(undefined), 'null');
  assert.equal(preview('x'.repeat(200), 10).length, 10);
  assert.equal(preview('line\nbreak'), '"line\\nbreak"');
});

test('kernel detection, reset ops and json equality', () => {
  assert.equal(isTactusKernel('tactus', 'lua'), true);
  assert.equal(isTactusKernel('other-lua', 'Lua'), true);
  assert.equal(isTactusKernel('python3', 'python'), false);
  assert.equal(isTactusKernel(undefined, undefined), false);
  assert.deepEqual(resetOp(), { op: 'reset' });
  assert.deepEqual(resetOp(['a']), { op: 'reset', procedures: ['a'] });
  assert.deepEqual(resetOp(['a'], { a: 2 }), { op: 'reset', procedures: ['a'], from: { a: 2 } });
  assert.equal(jsonEqual({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }), true);
  assert.equal(jsonEqual({ a: 1 }, { a: 1, b: undefined }), false);
  assert.equal(jsonEqual([1], { 0: 1 }), false);
});

test('a reset is answered by an update or delete naming the key or its root', () => {
  assert.equal(answersReset({ op: 'update', procedures: { ship: rec(1) } }, 'ship'), true);
  assert.equal(answersReset({ op: 'update', procedures: { deploy: rec(1) } }, 'deploy/build#1'), true);
  assert.equal(answersReset({ op: 'delete', procedures: ['ship'] }, 'ship'), true);
  assert.equal(answersReset({ op: 'update', procedures: { other: rec(1) } }, 'ship'), false);
  assert.equal(answersReset({ op: 'delete', procedures: [] }, 'ship'), false);
  assert.equal(answersReset({ op: 'warning', message: 'x' }, 'ship'), false);
  assert.equal(answersReset(null, 'ship'), false);
});

// Procedure names are any text: keys that are also Object.prototype's
// properties must be kept as records like any other (a plain assignment of
// `__proto__` would set the prototype and drop the record).
const PROPERTY_NAMES = ['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf'];

function ownRecords(block: unknown): { [key: string]: unknown } {
  const out: { [key: string]: unknown } = {};
  for (const [key, value] of Object.entries((block as { procedures: object }).procedures)) {
    Object.defineProperty(out, key, { value, enumerable: true });
  }
  return out;
}

for (const name of PROPERTY_NAMES) {
  test(`a procedure named ${name} is stored, updated, counted and deleted`, () => {
    const op = JSON.parse(`{"op": "update", "procedures": {"${name}": ${JSON.stringify(rec(1))}}}`);
    const r = applyOp(undefined, op);
    assert.equal(r.changed, true);
    assert.deepEqual(Object.keys(r.metadata!.procedures), [name]);
    assert.deepEqual(ownRecords(r.metadata)[name], rec(1));
    assert.equal(Object.getPrototypeOf(r.metadata!.procedures), Object.prototype);
    // it survives the notebook's JSON round trip
    const saved = JSON.parse(JSON.stringify(r.metadata));
    assert.deepEqual(Object.keys(saved.procedures), [name]);
    assert.equal(countCheckpoints(saved), 1);
    assert.deepEqual(summarize(saved).map(p => p.key), [name]);
    // the same record again is no change; a new one replaces it
    assert.equal(applyOp(saved, op).changed, false);
    const op2 = JSON.parse(`{"op": "update", "procedures": {"${name}": ${JSON.stringify(rec(2))}}}`);
    const r2 = applyOp(saved, op2);
    assert.equal(r2.changed, true);
    assert.deepEqual(ownRecords(r2.metadata)[name], rec(2));
    const gone = applyOp(r2.metadata, { op: 'delete', procedures: [name] });
    assert.equal(gone.changed, true);
    assert.deepEqual(Object.keys(gone.metadata!.procedures), []);
  });
}

test('updates held back for an unusable block keep a __proto__ record too', () => {
  const op = JSON.parse(`{"op": "update", "procedures": {"__proto__": ${JSON.stringify(rec(1))}}}`);
  const r = applyOp({ version: 99 }, op);
  assert.equal(r.changed, false);
  assert.deepEqual(Object.keys(r.held), ['__proto__']);
  const reset = applyOp({ version: 99 }, { op: 'delete', procedures: [] }, r.held);
  assert.deepEqual(Object.keys(reset.metadata!.procedures), ['__proto__']);
});

// ------------------------------------------------ the schema, shared cases
const CASES: { name: string; block: unknown; field?: string }[] = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'test', 'metadata-cases.json'), 'utf-8')
).cases;

for (const c of CASES) {
  test(`the extension judges "${c.name}" as the kernel does`, () => {
    // tests/test_protocol.py runs the kernel's parse_metadata on the same cases
    const problem = metadataProblem(c.block);
    if (c.field === undefined) {
      assert.equal(problem, null);
    } else {
      assert.ok(problem !== null && problem.startsWith(`${c.field} `), `${problem} should name ${c.field}`);
    }
  });
}

test('a block with an entry without value is held back, as the kernel refuses it', () => {
  const stored = { version: 1, procedures: { a: { checkpoints: [{ kind: 'step', name: 's', at: AT }] } } };
  const r = applyOp(stored, { op: 'update', procedures: { demo: rec(1) } });
  assert.equal(r.changed, false);
  assert.match(r.problem!, /metadata\.tactus\.procedures\.a\.checkpoints\.0\.value is required/);
});

// ------------------------------------------------------------- append op
test('append keeps the first `from` checkpoints, adds the new ones and sets fields', () => {
  const stored = { version: 1, procedures: { demo: rec(1, { title: 'demo' }), other: rec('x') } };
  const before = JSON.stringify(stored);
  const op = {
    op: 'append',
    protocol: '1.1',
    procedures: { demo: { from: 1, checkpoints: [{ kind: 'step', name: 'next', value: 2, at: AT }], status: 'running' } }
  };
  const r = applyOp(stored, op);
  assert.equal(r.changed, true);
  assert.deepEqual(r.touched, ['demo']);
  assert.deepEqual(r.metadata!.procedures.demo, {
    checkpoints: [rec(1).checkpoints[0], { kind: 'step', name: 'next', value: 2, at: AT }],
    status: 'running',
    title: 'demo'
  });
  assert.deepEqual(r.metadata!.procedures.other, rec('x'));
  assert.equal(JSON.stringify(stored), before, 'the stored block is not mutated');
  // from 0 with no checkpoints: the record was cut (Ask again)
  const cut = applyOp(r.metadata, { op: 'append', procedures: { demo: { from: 0, checkpoints: [] } } });
  assert.deepEqual(cut.metadata!.procedures.demo.checkpoints, []);
});

test('append to a nested path makes the records on the way, as fold_op does', () => {
  const r = applyOp(undefined, {
    op: 'append',
    procedures: { 'a/b#1': { from: 0, checkpoints: [{ kind: 'step', name: 's', value: 1, at: AT }], status: 'completed' } }
  });
  assert.deepEqual(r.metadata, {
    version: 1,
    procedures: {
      a: { checkpoints: [], children: { 'b#1': { checkpoints: [{ kind: 'step', name: 's', value: 1, at: AT }], status: 'completed' } } }
    }
  });
  assert.deepEqual(r.touched, ['a']);
  assert.equal(answersReset({ op: 'append', procedures: { 'a/b#1': {} } }, 'a'), true);
});

test('append while the stored block is unusable is held back', () => {
  const corrupt = { version: 99, procedures: 'nope' };
  const r = applyOp(corrupt, { op: 'append', procedures: { demo: { from: 0, checkpoints: [], status: 'running' } } });
  assert.equal(r.changed, false);
  assert.deepEqual(r.held, { demo: { checkpoints: [], status: 'running' } });
});

test('an op of an unknown major protocol version is ignored, with a reason', () => {
  const stored = { version: 1, procedures: { demo: rec(1) } };
  const r = applyOp(stored, { op: 'update', protocol: '2.0', procedures: { demo: rec(2) } });
  assert.equal(r.changed, false);
  assert.match(r.ignored!, /ignored a 'update' op of protocol "2\.0": this extension speaks protocol 1\.1/);
  // a newer minor is fine, and absent means 1.0
  assert.equal(applyOp(stored, { op: 'update', protocol: '1.9', procedures: { demo: rec(2) } }).changed, true);
  assert.equal(applyOp(stored, { op: 'update', procedures: { demo: rec(2) } }).ignored, undefined);
});
