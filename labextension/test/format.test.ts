/**
 * Unit tests of what a person reads: times, procedure names, the card bundle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { firstLine, ICellInfo, parseCard, procedureLabel, utcDateTime, utcTime } from '../src/format';

const CARD = {
  version: 1,
  state: 'answered',
  request: 'approve',
  procedure: 'ship',
  name: 'Ship it?',
  message: 'Ship it?',
  context: { env: 'prod' },
  answer: true,
  answer_text: 'Approved',
  at: '2026-12-05T03:13:26.123Z',
  index: 0,
  cell_id: 'c1'
};

test('times are UTC in the cards\' format, whatever the local zone', () => {
  assert.equal(utcTime('2026-12-05T03:13:26.123Z'), '03:13:26 UTC');
  assert.equal(utcDateTime('2026-12-05T03:13:26.123Z'), '2026-12-05 03:13:26 UTC');
  assert.equal(utcDateTime('2026-01-09T23:05:07+02:00'), '2026-01-09 21:05:07 UTC');
  // an unreadable stamp is shown as it is, not as "Invalid Date"
  assert.equal(utcTime('yesterday'), 'yesterday');
  assert.equal(utcDateTime(''), '');
});

const CELLS: ICellInfo[] = [
  { id: 'a1b2', source: 'x = 1', executionCount: null },
  {
    id: '0c6c5d1e-9a4b-4f5e-8d1c-3b2a1f0e9d8c',
    source: '\n-- ask\nlocal c = Human.input({message = "Favourite colour?"})\nreturn c',
    executionCount: 3
  },
  { id: 'unrun', source: 'Human.approve({message = "Go?"})', executionCount: null }
];

test('a procedure keyed by a cell id is named after the cell', () => {
  assert.equal(
    procedureLabel('0c6c5d1e-9a4b-4f5e-8d1c-3b2a1f0e9d8c', CELLS),
    'cell [3] · local c = Human.input({message = "Favourite colour?"})'
  );
  // not run yet: its position, which never reads like a prompt number
  assert.equal(procedureLabel('unrun', CELLS), 'cell #3 · Human.approve({message = "Go?"})');
  assert.equal(procedureLabel('a1b2', CELLS), 'cell #1 · x = 1');
  // a child of a cell-keyed procedure keeps its path
  assert.equal(procedureLabel('a1b2/build#1', CELLS), 'cell #1 · x = 1/build#1');
  // a named procedure, or a cell no longer in the notebook, keeps its key
  assert.equal(procedureLabel('deploy', CELLS), 'deploy');
  assert.equal(procedureLabel('ffff-gone', CELLS), 'ffff-gone');
});

test('the first line skips blanks and comments and is cut to 60 characters', () => {
  assert.equal(firstLine('\n  -- note\n  print(1)\n'), 'print(1)');
  assert.equal(firstLine('-- only a comment'), '-- only a comment');
  assert.equal(firstLine(''), '');
  const long = firstLine('local x = "' + 'y'.repeat(100) + '"');
  assert.equal(long.length, 60);
  assert.ok(long.endsWith('…'));
});

test('a well-formed card parses, with index and cell_id defaulting to null', () => {
  assert.deepEqual(parseCard(CARD), { card: CARD });
  const { index, cell_id, ...bare } = CARD;
  void index;
  void cell_id;
  assert.deepEqual(parseCard(bare), { card: { ...bare, index: null, cell_id: null } });
});

test('a malformed card says what is wrong with it', () => {
  assert.deepEqual(parseCard(null), { problem: 'the card is not a JSON object' });
  assert.deepEqual(parseCard({ ...CARD, version: 2 }), { problem: 'card version 2 is not 1' });
  assert.deepEqual(parseCard({ ...CARD, state: 'maybe' }), { problem: 'unknown card state "maybe"' });
  assert.deepEqual(parseCard({ ...CARD, request: 'poll' }), { problem: 'unknown request "poll"' });
  assert.deepEqual(parseCard({ ...CARD, message: 7 }), { problem: 'card field "message" must be a string' });
  assert.deepEqual(parseCard({ ...CARD, index: -1 }), {
    problem: 'card field "index" must be a checkpoint index or null'
  });
  assert.deepEqual(parseCard({ ...CARD, cell_id: 5 }), { problem: 'card field "cell_id" must be a string or null' });
});
