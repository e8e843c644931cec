/**
 * tactus-kernel-labextension: keeps Tactus procedure checkpoints in the
 * notebook (`metadata.tactus`) and shows them.
 *
 * - every notebook gets a TactusConnector (connector.ts) that opens the
 *   `tactus` comm to a Tactus kernel and merges the kernel's ops into the
 *   metadata (merge.ts);
 * - the command "Tactus: Show recorded checkpoints" (palette, and a notebook
 *   toolbar button with a count badge) opens a dialog listing procedures and
 *   their checkpoints, with a Clear button per procedure (view.ts).
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';

import { TactusConnector } from './connector';
import { CheckpointsBadge, showCheckpoints, tactusIcon } from './view';

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

function activate(app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette | null): void {
  const connectors = new Connectors();
  const open = (connector: TactusConnector) => void showCheckpoints(connector);

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
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate
};

export default plugin;
