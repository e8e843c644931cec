/**
 * The renderer of answered cards (`application/vnd.tactus.card+json`).
 *
 * Once a person has answered (or a run replayed the answer), the kernel
 * shows the card as a static bundle: this JSON, plus `text/html` and
 * `text/plain` for GitHub, nbviewer and other frontends. Registered at rank
 * 0, this renderer wins over the HTML in JupyterLab and Notebook 7 and draws
 * the card with theme variables only, with an **Ask again** button that
 * forgets the answer (and what came after it) and runs the cell again.
 * Plain DOM, text only (no HTML from the bundle), so it is safe on an
 * untrusted notebook.
 */

import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { CARD_MIME, ICard, parseCard, utcDateTime, utcTime } from './format';

/** What the card needs from the application (see index.ts). */
export interface ICardHost {
  /**
   * Ask again: forget the card's answer and every later checkpoint of its
   * procedure, then run the cell that holds `node`. Resolves to null when
   * the cell was started, or to the reason it could not be.
   */
  askAgain(node: HTMLElement, card: ICard): Promise<string | null>;
  /** A name a person recognises for a procedure key, seen from `node`'s notebook. */
  label(node: HTMLElement, key: string): string;
}

const TITLES: { [request: string]: string } = {
  approve: 'Approval',
  input: 'Input',
  review: 'Review',
  escalate: 'Escalation'
};

const TAGS: { [state: string]: string } = {
  recorded: 'recorded',
  timed_out: 'timed out',
  stopped: 'stopped'
};

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  node.append(...children);
  return node;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The context as a two-column table (an object) or as indented JSON (anything else). */
function contextNode(context: unknown): HTMLElement | null {
  if (context === null || context === undefined) {
    return null;
  }
  if (typeof context === 'object' && !Array.isArray(context)) {
    const entries = Object.entries(context as { [key: string]: unknown });
    if (!entries.length) {
      return null;
    }
    const rows = entries.map(([key, value]) => el('tr', '', el('th', '', key), el('td', '', text(value))));
    return el('table', 'jp-TactusCard-context', el('tbody', '', ...rows));
  }
  if (Array.isArray(context) && !context.length) {
    return null;
  }
  return el('pre', 'jp-TactusCard-context', JSON.stringify(context, null, 2));
}

/** The answer's tone: which of the theme's colours marks it. */
function tone(card: ICard): string {
  if (card.state === 'timed_out') {
    return 'jp-mod-timed-out';
  }
  if (card.state === 'stopped') {
    return 'jp-mod-stopped';
  }
  if (card.request === 'approve') {
    return card.answer === true ? 'jp-mod-approved' : 'jp-mod-rejected';
  }
  if (card.request === 'review') {
    const decision = typeof card.answer === 'object' && card.answer ? (card.answer as any).decision : card.answer;
    return /^reject/i.test(String(decision)) ? 'jp-mod-rejected' : 'jp-mod-approved';
  }
  return 'jp-mod-approved';
}

/** What a reviewer wrote, when the card is a review that has feedback. */
function reviewFeedback(card: ICard): string | null {
  const answer = card.answer as { feedback?: unknown } | null;
  if (card.request !== 'review' || typeof answer !== 'object' || answer === null) {
    return null;
  }
  return typeof answer.feedback === 'string' && answer.feedback ? answer.feedback : null;
}

export class CardRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(host: ICardHost) {
    super();
    this._host = host;
    this.addClass('jp-TactusCard');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const parsed = parseCard(model.data[CARD_MIME]);
    this.node.replaceChildren();
    if ('problem' in parsed) {
      this.addClass('jp-mod-invalid');
      this.node.append(el('div', 'jp-TactusCard-problem', `Tactus card cannot be shown: ${parsed.problem}`));
      return;
    }
    const card = (this._card = parsed.card);
    this.node.dataset.state = card.state;
    this.node.dataset.request = card.request;
    this.node.classList.toggle('jp-mod-escalate', card.request === 'escalate');

    this._procedure = el('span', 'jp-TactusCard-procedure', `procedure ${card.procedure}`);
    this._procedure.title = card.procedure;
    const header = el('div', 'jp-TactusCard-header', el('span', 'jp-TactusCard-title', TITLES[card.request]), ' · ');
    header.append(this._procedure);
    if (TAGS[card.state]) {
      header.append(el('span', 'jp-TactusCard-tag', TAGS[card.state]));
    }
    this.node.append(header, el('div', 'jp-TactusCard-message', card.message));
    const context = contextNode(card.context);
    if (context) {
      this.node.append(context);
    }

    const feedback = reviewFeedback(card);
    if (feedback) {
      this.node.append(el('div', 'jp-TactusCard-feedback', `Feedback: ${feedback}`));
    }

    const time = el('span', 'jp-TactusCard-time', card.at ? `at ${utcTime(card.at)}` : '');
    time.title = card.at ? utcDateTime(card.at) : '';
    const answer = el('span', `jp-TactusCard-answer ${tone(card)}`, card.answer_text);
    const again = el('button', 'jp-Button jp-mod-styled jp-TactusCard-again', 'Ask again');
    again.type = 'button';
    again.title =
      card.index === null && card.state !== 'stopped'
        ? `Forget every checkpoint of ${card.procedure} and run the cell again`
        : card.state === 'stopped'
          ? 'Run the cell again'
          : 'Forget this answer and every later checkpoint of the procedure, and run the cell again';
    again.addEventListener('click', () => void this._askAgain());
    this._again = again;
    this._note = el('span', 'jp-TactusCard-note');
    this.node.append(el('div', 'jp-TactusCard-footer', answer, time, el('span', 'jp-TactusCard-spacer'), this._note, again));
    this._name();
  }

  protected onAfterAttach(): void {
    this._name();
  }

  /** Name a procedure keyed by a cell id after its cell (needs the node in its notebook). */
  private _name(): void {
    if (this._card && this._procedure && this.node.isConnected) {
      const label = this._host.label(this.node, this._card.procedure);
      this._procedure.textContent = label === this._card.procedure ? `procedure ${label}` : label;
    }
  }

  private async _askAgain(): Promise<void> {
    if (!this._card || !this._again || !this._note) {
      return;
    }
    this._again.disabled = true;
    this._note.textContent = 'Asking again…';
    let problem: string | null;
    try {
      problem = await this._host.askAgain(this.node, this._card);
    } catch (reason) {
      problem = `could not ask again: ${reason}`;
    }
    if (this.isDisposed) {
      return; // the re-run cleared this output, as it should
    }
    this._note.textContent = problem ?? 'Running the cell again…';
    this._again.disabled = problem === null;
  }

  private _host: ICardHost;
  private _card: ICard | null = null;
  private _procedure: HTMLElement | null = null;
  private _again: HTMLButtonElement | null = null;
  private _note: HTMLElement | null = null;
}

/** The renderer factory, rank 0: preferred over the bundle's `text/html`. */
export function cardRendererFactory(host: ICardHost): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [CARD_MIME],
    defaultRank: 0,
    createRenderer: () => new CardRenderer(host)
  };
}
