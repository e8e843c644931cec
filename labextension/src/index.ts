/**
 * tactus-kernel-labextension: keeps Tactus procedure checkpoints in the
 * notebook (`metadata.tactus`) and shows them.
 *
 * - every notebook gets a TactusConnector (connector.ts) that opens the
 *   `tactus` comm to a Tactus kernel and merges the kernel's ops into the
 *   metadata (merge.ts);
 * - the command "Tactus: Show recorded checkpoints" (palette, and a notebook
 *   toolbar button with a count badge) opens a dialog listing procedures and
 *   their checkpoints, with a Clear button per procedure (view.ts);
 * - answered cards (`application/vnd.tactus.card+json`) are drawn by a
 *   renderer with an Ask again button (card.ts);
 * - outputs of a cell run before the notebook was reopened still reach
 *   their cell (orphans.ts).
 *
 * Every token it requires exists in Notebook 7 too; the palette is optional.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IDisposable } from '@lumino/disposable';

import { cardRendererFactory, ICardHost } from './card';
import { TactusConnector } from './connector';
import { ICard, procedureLabel } from './format';
import { cellInfos, CheckpointsBadge, showCheckpoints, tactusIcon } from './view';

export const PLUGIN_ID = 'tactus-kernel-labextension:plugin';
export const SHOW_COMMAND = 'tactus:show-checkpoints';

type NotebookContext = DocumentRegistry.IContext<INotebookModel>;

/** One connector per document context, shared by all views of a notebook. */
class Connectors {
  get(context: NotebookContext): TactusConnector {
    let connector = this._map.get(context);
    if (!connector) {
      const created = new TactusConnector(context);
      this._map.set(context, created);
      context.disposed.connect(() => {
        this._map.delete(context);
        created.dispose();
      });
      connector = created;
    }
    return connector;
  }

  private _map = new Map<NotebookContext, TactusConnector>();
}

class ToolbarExtension implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(
    private connectors: Connectors,
    private open: (connector: TactusConnector) => void
  ) {}

  createNew(panel: NotebookPanel, context: NotebookContext): IDisposable {
    const connector = this.connectors.get(context);
    const badge = new CheckpointsBadge(connector, () => this.open(connector));
    panel.toolbar.insertItem(10, 'tactusCheckpoints', badge);
    return badge;
  }
}

/** The notebook panel and the cell that hold a node (a rendered card). */
function locate(tracker: INotebookTracker, node: HTMLElement): { panel: NotebookPanel; index: number } | null {
  const panel = tracker.find(p => p.node.contains(node));
  if (!panel) {
    return null;
  }
  const index = panel.content.widgets.findIndex(cell => cell.node.contains(node));
  return index < 0 ? null : { panel, index };
}

/** What an answered card does in a notebook: Ask again, and its procedure's name. */
function cardHost(tracker: INotebookTracker, connectors: Connectors): ICardHost {
  return {
    label(node: HTMLElement, key: string): string {
      const panel = tracker.find(p => p.node.contains(node));
      return panel ? procedureLabel(key, cellInfos(panel.content.model)) : key;
    },

    async askAgain(node: HTMLElement, card: ICard): Promise<string | null> {
      const found = locate(tracker, node);
      if (!found) {
        return 'Ask again works on the card in its notebook.';
      }
      const connector = connectors.get(found.panel.context);
      if (!connector.connected) {
        return 'Start a Tactus kernel to ask again.';
      }
      // Forgetting under a run still going would leave its later records misplaced.
      const model = found.panel.content.widgets[found.index].model as ICodeCellModel;
      if (model.executionState === 'running') {
        return 'The cell is still running: stop it first, then Ask again.';
      }
      // A stopped request recorded no answer: running the cell asks again.
      if (!(card.state === 'stopped' && card.index === null)) {
        if (!(await connector.resetFrom(card.procedure, card.index))) {
          return 'The kernel did not confirm the reset; nothing was run. Try again.';
        }
      }
      // Where the cell is now (the notebook may have changed while waiting).
      const at = locate(tracker, node);
      if (!at) {
        return 'The cell is gone; its answer is forgotten.';
      }
      const notebook = at.panel.content;
      notebook.activeCellIndex = at.index;
      notebook.deselectAll();
      // Not awaited: the run may wait for a person.
      void NotebookActions.run(notebook, at.panel.sessionContext);
      return null;
    }
  };
}

function activate(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  rendermime: IRenderMimeRegistry,
  palette: ICommandPalette | null
): void {
  const connectors = new Connectors();
  const open = (connector: TactusConnector) => void showCheckpoints(connector);

  // Rank 0: preferred over the card's text/html (and any other bundle entry).
  rendermime.addFactory(cardRendererFactory(cardHost(tracker, connectors)), 0);

  app.docRegistry.addWidgetExtension('Notebook', new ToolbarExtension(connectors, open));

  app.commands.addCommand(SHOW_COMMAND, {
    label: 'Tactus: Show recorded checkpoints',
    caption: "List the procedures and checkpoints recorded in this notebook's metadata",
    icon: args => (args['isPalette'] ? undefined : tactusIcon),
    isEnabled: () => tracker.currentWidget !== null,
    execute: () => {
      const panel = tracker.currentWidget;
      if (panel) {
        open(connectors.get(panel.context));
      }
    }
  });
  if (palette) {
    palette.addItem({ command: SHOW_COMMAND, category: 'Tactus' });
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: "Stores Tactus procedure checkpoints in the notebook's metadata and shows them.",
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ICommandPalette],
  activate
};

export default plugin;
