/**
 * Pure helpers for what a person reads: times, procedure names, and the
 * answered-card bundle (`application/vnd.tactus.card+json`). No JupyterLab
 * import, so the unit tests run them in Node.
 */

export const CARD_MIME = 'application/vnd.tactus.card+json';

export type CardState = 'answered' | 'recorded' | 'timed_out' | 'stopped';
export type CardRequest = 'approve' | 'input' | 'review' | 'escalate';

/** The kernel's static card: what was asked, what was answered, when. */
export interface ICard {
  version: 1;
  state: CardState;
  request: CardRequest;
  procedure: string;
  name: string;
  message: string;
  context: unknown;
  answer: unknown;
  answer_text: string;
  at: string;
  index: number | null;
  cell_id: string | null;
}

const STATES: CardState[] = ['answered', 'recorded', 'timed_out', 'stopped'];
const REQUESTS: CardRequest[] = ['approve', 'input', 'review', 'escalate'];

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The card in a bundle, or why it cannot be drawn (the renderer then shows
 * that reason instead of guessing).
 */
export function parseCard(data: unknown): { card: ICard } | { problem: string } {
  if (!isObject(data)) {
    return { problem: 'the card is not a JSON object' };
  }
  if (data.version !== 1) {
    return { problem: `card version ${JSON.stringify(data.version)} is not 1` };
  }
  if (!STATES.includes(data.state as CardState)) {
    return { problem: `unknown card state ${JSON.stringify(data.state)}` };
  }
  if (!REQUESTS.includes(data.request as CardRequest)) {
    return { problem: `unknown request ${JSON.stringify(data.request)}` };
  }
  for (const field of ['procedure', 'name', 'message', 'answer_text', 'at']) {
    if (typeof data[field] !== 'string') {
      return { problem: `card field "${field}" must be a string` };
    }
  }
  const index = data.index ?? null;
  if (index !== null && !(Number.isInteger(index) && (index as number) >= 0)) {
    return { problem: 'card field "index" must be a checkpoint index or null' };
  }
  const cellId = data.cell_id ?? null;
  if (cellId !== null && typeof cellId !== 'string') {
    return { problem: 'card field "cell_id" must be a string or null' };
  }
  return {
    card: { ...(data as unknown as ICard), index: index as number | null, cell_id: cellId as string | null }
  };
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

function parse(iso: string): Date | null {
  if (!iso) {
    return null;
  }
  const date = new Date(iso);
  return isNaN(date.getTime()) ? null : date;
}

/** `HH:MM:SS UTC`, the time format of the cards (an unreadable stamp is returned as it is). */
export function utcTime(iso: string): string {
  const d = parse(iso);
  return d ? `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC` : iso;
}

/** `YYYY-MM-DD HH:MM:SS UTC`, for the dialog, where records span days. */
export function utcDateTime(iso: string): string {
  const d = parse(iso);
  return d ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${utcTime(iso)}` : iso;
}

/** What the notebook knows of one cell, to name a procedure keyed by its id. */
export interface ICellInfo {
  id: string;
  source: string;
  executionCount: number | null;
}

const MAX_LINE = 60;

/** The first line of a cell that says something (not blank, not a comment). */
export function firstLine(source: string): string {
  const lines = source.split('\n').map(l => l.trim());
  const line = lines.find(l => l && !l.startsWith('--')) ?? lines.find(l => l) ?? '';
  return line.length > MAX_LINE ? line.slice(0, MAX_LINE - 1) + '…' : line;
}

/**
 * A name a person recognises for a procedure key. A human request outside
 * a named procedure is keyed by its cell's id (a UUID): it is shown as
 * `cell [N] · <first line>`, N being the cell's execution count as its
 * prompt shows it, or `cell #P · ...` (its position, 1-based) for a cell not
 * run yet, so the two never read alike. Other keys (procedure names) are
 * shown as they are.
 */
export function procedureLabel(key: string, cells: ICellInfo[]): string {
  const root = key.split('/')[0];
  const at = cells.findIndex(c => c.id === root);
  if (at < 0) {
    return key;
  }
  const cell = cells[at];
  const name = cell.executionCount ? `cell [${cell.executionCount}]` : `cell #${at + 1}`;
  const line = firstLine(cell.source);
  const rest = key.slice(root.length);
  return `${name}${line ? ` · ${line}` : ''}${rest}`;
}
