/**
 * What a person sees: the checkpoints dialog and the toolbar badge.
 *
 * Plain DOM on Lumino widgets; both re-render whenever the connector says
 * the records, the connection or the unsaved count changed.
 */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookModel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { TactusConnector } from './connector';
import { ICellInfo, procedureLabel, utcDateTime } from './format';
import { countCheckpoints, IProcedureSummary, preview, summarize } from './merge';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M5 3h2v18H5z"/>
    <path d="M8 4h10l-2.5 4L18 12H8z"/>
  </g>
</svg>`;

export const tactusIcon = new LabIcon({ name: 'tactus-kernel-labextension:flag', svgstr: ICON_SVG });

const CONFIRM_MS = 4000;
const MAX_NAMES = 5;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') {
      node.className = value;
    } else {
      node.setAttribute(name, value);
    }
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The cells of a notebook, to name procedures keyed by a cell id (see procedureLabel). */
export function cellInfos(model: INotebookModel | null): ICellInfo[] {
  const cells: ICellInfo[] = [];
  if (!model || model.isDisposed) {
    return cells;
  }
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    const count = cell.type === 'code' ? (cell as ICodeCellModel).executionCount : null;
    cells.push({ id: cell.id, source: cell.sharedModel.getSource(), executionCount: count ?? null });
  }
  return cells;
}

function labels(c: TactusConnector): (key: string) => string {
  const cells = cellInfos(c.context.model);
  return key => procedureLabel(key, cells);
}

/** A button that asks "sure?" on the first click and acts on the second. */
function confirmButton(label: string, title: string, enabled: boolean, act: () => void): HTMLButtonElement {
  const button = el('button', { class: 'jp-Button jp-mod-styled jp-mod-reject jp-TactusCheckpoints-clear', title });
  button.textContent = label;
  button.disabled = !enabled;
  let timer = 0;
  button.addEventListener('click', () => {
    if (!button.classList.contains('jp-mod-confirm')) {
      button.classList.add('jp-mod-confirm', 'jp-mod-warn');
      button.textContent = `Confirm ${label.toLowerCase()}`;
      timer = window.setTimeout(() => {
        button.classList.remove('jp-mod-confirm', 'jp-mod-warn');
        button.textContent = label;
      }, CONFIRM_MS);
      return;
    }
    window.clearTimeout(timer);
    button.disabled = true;
    button.textContent = 'Clearing…';
    act();
  });
  return button;
}

/**
 * A widget that redraws whenever its notebook's connector changes, and stops
 * listening when disposed. Subclasses build their nodes, then call
 * `this._render()` once.
 */
abstract class ConnectorWidget extends Widget {
  constructor(connector: TactusConnector, options?: Widget.IOptions) {
    super(options);
    this._connector = connector;
    connector.changed.connect(this._render, this);
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._connector.changed.disconnect(this._render, this);
    }
    super.dispose();
  }

  protected abstract _render(): void;

  protected readonly _connector: TactusConnector;
}

/** The body of the "recorded checkpoints" dialog. */
export class CheckpointsView extends ConnectorWidget {
  constructor(connector: TactusConnector) {
    super(connector);
    this.addClass('jp-TactusCheckpoints');
    this._render();
  }

  protected _render(): void {
    const c = this._connector;
    const stored = c.stored;
    const procedures = summarize(stored);
    const node = this.node;
    node.replaceChildren();

    const state = c.connected
      ? 'Tactus kernel connected'
      : c.isTactus
        ? 'Tactus kernel not connected'
        : 'no Tactus kernel: start one to clear checkpoints';
    const summary = el(
      'div',
      { class: 'jp-TactusCheckpoints-summary' },
      `${plural(countCheckpoints(stored), 'checkpoint')} in ${plural(procedures.length, 'procedure')} · ${state}`
    );
    if (c.unsaved) {
      summary.append(
        ' · ',
        el('span', { class: 'jp-TactusCheckpoints-unsaved' }, `${plural(c.unsaved, 'procedure')} changed since the last save`)
      );
    }
    const clearAll = confirmButton(
      'Clear all',
      'Make the kernel forget every recorded checkpoint of this notebook (answers included)',
      c.connected && (procedures.length > 0 || c.problem !== null || c.held > 0),
      () => c.reset()
    );
    node.append(el('div', { class: 'jp-TactusCheckpoints-top' }, summary, clearAll));

    const problem = c.problem;
    if (problem) {
      node.append(
        el(
          'div',
          { class: 'jp-TactusCheckpoints-problem' },
          `The notebook's metadata.tactus cannot be used: ${problem}. It is left as it is; ` +
            `${plural(c.held, 'procedure')} recorded by the kernel ${c.held === 1 ? 'is' : 'are'} not written ` +
            'into the notebook until you fix it by hand or Clear all (which replaces it).'
        )
      );
      return;
    }
    if (!procedures.length) {
      node.append(el('p', { class: 'jp-TactusCheckpoints-empty' }, 'No checkpoints recorded in this notebook yet.'));
      return;
    }
    const label = labels(c);
    for (const procedure of procedures) {
      node.append(this._procedure(procedure, label(procedure.key)));
    }
  }

  private _procedure(p: IProcedureSummary, label: string): HTMLElement {
    const c = this._connector;
    const header = el(
      'div',
      { class: 'jp-TactusCheckpoints-header' },
      el('span', { class: 'jp-TactusCheckpoints-key', title: p.key }, label),
      el('span', { class: `jp-TactusCheckpoints-status jp-mod-${p.status || 'unknown'}` }, p.status || 'no status'),
      el('span', { class: 'jp-TactusCheckpoints-count' }, plural(p.count, 'checkpoint')),
      el('span', { class: 'jp-TactusCheckpoints-last', title: p.last }, p.last ? `last ${utcDateTime(p.last)}` : ''),
      confirmButton(
        'Clear',
        c.connected
          ? `Make the kernel forget the checkpoints of ${label}: the next run records afresh`
          : 'Connect a Tactus kernel to clear checkpoints',
        c.connected,
        () => c.reset([p.key])
      )
    );
    const rows = p.checkpoints.map((entry, i) =>
      el(
        'tr',
        {},
        el('td', {}, String(i + 1)),
        el('td', { class: 'jp-TactusCheckpoints-kind' }, String(entry.kind)),
        el('td', {}, String(entry.name)),
        el('td', { class: 'jp-TactusCheckpoints-value', title: preview(entry.value, 2000) }, preview(entry.value)),
        el('td', { class: 'jp-TactusCheckpoints-at', title: String(entry.at) }, utcDateTime(String(entry.at)))
      )
    );
    const table = el(
      'table',
      { class: 'jp-TactusCheckpoints-table' },
      el(
        'thead',
        {},
        el('tr', {}, el('th', {}, '#'), el('th', {}, 'kind'), el('th', {}, 'name'), el('th', {}, 'value'), el('th', {}, 'at'))
      ),
      el('tbody', {}, ...rows)
    );
    return el('section', { class: 'jp-TactusCheckpoints-procedure', 'data-procedure': p.key }, header, table);
  }

}

/** Open the dialog for one notebook. */
export async function showCheckpoints(connector: TactusConnector): Promise<void> {
  const body = new CheckpointsView(connector);
  await showDialog({
    title: `Tactus checkpoints: ${connector.context.localPath}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}

/** The notebook toolbar item: opens the dialog, shows counts. */
export class CheckpointsBadge extends ConnectorWidget {
  constructor(connector: TactusConnector, open: () => void) {
    super(connector, { node: document.createElement('div') });
    this.addClass('jp-TactusBadge');
    const button = el('button', {
      class: 'jp-ToolbarButtonComponent jp-Button jp-mod-minimal jp-TactusBadge-button',
      'data-command': 'tactus:show-checkpoints'
    });
    button.addEventListener('click', open);
    this._icon = el('span', { class: 'jp-ToolbarButtonComponent-icon' });
    tactusIcon.element({ container: this._icon });
    this._count = el('span', { class: 'jp-TactusBadge-count' });
    this._dot = el('span', { class: 'jp-TactusBadge-unsaved' });
    button.append(this._icon, this._count, this._dot);
    this.node.append(button);
    this._button = button;
    this._render();
  }

  protected _render(): void {
    const c = this._connector;
    const stored = c.stored;
    // Shown for Tactus notebooks only: a Tactus kernel, or stored checkpoints.
    this.setHidden(!c.isTactus && (stored === undefined || stored === null));
    const count = countCheckpoints(stored);
    const summaries = summarize(stored);
    const procedures = summaries.length;
    this._count.textContent = c.problem ? '!' : String(count);
    this._dot.style.display = c.unsaved ? '' : 'none';
    const label = labels(c);
    const names = summaries.slice(0, MAX_NAMES).map(p => label(p.key));
    if (procedures > MAX_NAMES) {
      names.push(`${procedures - MAX_NAMES} more`);
    }
    const parts = [
      c.problem
        ? `metadata.tactus cannot be used: ${c.problem}`
        : `${plural(count, 'checkpoint')} in ${plural(procedures, 'procedure')} recorded in this notebook` +
          (names.length ? ` (${names.join(', ')})` : '')
    ];
    if (c.unsaved) {
      parts.push(`${plural(c.unsaved, 'procedure')} changed since the last save`);
    }
    if (c.held) {
      parts.push(`${plural(c.held, 'procedure')} held back`);
    }
    parts.push(c.connected ? 'Tactus kernel connected' : 'Tactus kernel not connected');
    this._button.title = `Tactus: show recorded checkpoints (${parts.join('; ')})`;
    this._button.classList.toggle('jp-mod-problem', c.problem !== null);
  }

  private _button: HTMLButtonElement;
  private _icon: HTMLElement;
  private _count: HTMLElement;
  private _dot: HTMLElement;
}
