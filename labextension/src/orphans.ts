/**
 * Outputs of a cell that this page did not run.
 *
 * JupyterLab routes a cell's outputs through the future of the execute
 * request that ran it. Close a notebook while a cell waits for a person,
 * reopen it, and the card comes back (its widget lives in the kernel), but
 * the page has no future for that request: the click is recorded and the
 * cell's result goes nowhere, its prompt stays `[ ]`.
 *
 * The Tactus kernel names the cell in the metadata of every message it
 * sends for it (`{"cellId": ..., "executionCount": ...}`, from the
 * `metadata.cellId` JupyterLab puts on each execute request). For a message
 * whose request was sent by another connection (its parent's `session` is
 * not this kernel connection's client id, so no future of this page will
 * take it) this class adds the output to the cell with that id, marks it
 * running, and sets its execution count when the kernel goes idle.
 */

import { ICodeCellModel } from '@jupyterlab/cells';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import * as nbformat from '@jupyterlab/nbformat';
import { INotebookModel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';

const OUTPUTS = new Set(['stream', 'display_data', 'execute_result', 'error', 'update_display_data', 'clear_output']);

interface IOrigin {
  cellId: string;
  executionCount: number | null;
}

/** The cell a message is for, as the kernel named it in the message's metadata. */
export function origin(msg: KernelMessage.IMessage): IOrigin | null {
  const meta = msg.metadata as { cellId?: unknown; executionCount?: unknown } | undefined;
  if (!meta || typeof meta.cellId !== 'string' || !meta.cellId) {
    return null;
  }
  const n = meta.executionCount;
  return { cellId: meta.cellId, executionCount: typeof n === 'number' && Number.isInteger(n) ? n : null };
}

export class OrphanOutputs implements IDisposable {
  /** `active()` says whether to act (a Tactus kernel is connected). */
  constructor(context: DocumentRegistry.IContext<INotebookModel>, active: () => boolean) {
    this._context = context;
    this._active = active;
    context.sessionContext.iopubMessage.connect(this._onMessage, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._context.sessionContext.iopubMessage.disconnect(this._onMessage, this);
    this._displays.clear();
  }

  private _onMessage(_: unknown, msg: KernelMessage.IMessage): void {
    const kernel = this._context.sessionContext.session?.kernel;
    const parent = msg.parent_header as Partial<KernelMessage.IHeader> | undefined;
    if (!kernel || !parent?.msg_id || parent.session === kernel.clientId || !this._active()) {
      return; // no parent, or a request of this page: its future shows the output
    }
    const type = msg.header.msg_type;
    if (type !== 'status' && !OUTPUTS.has(type)) {
      return;
    }
    const from = origin(msg);
    const cell = from ? this._cell(from.cellId) : null;
    if (!from || !cell) {
      return;
    }
    const content = msg.content as any;
    if (type === 'status') {
      if (content.execution_state === 'idle' && parent.msg_type === 'execute_request') {
        this._finish(cell, from.executionCount);
      }
      return;
    }
    cell.executionState = 'running';
    const outputs = cell.outputs;
    switch (type) {
      case 'clear_output':
        outputs.clear(Boolean(content.wait));
        for (const [id, at] of this._displays) {
          if (at.cell === cell) {
            this._displays.delete(id);
          }
        }
        return;
      case 'update_display_data': {
        const id = content.transient?.display_id;
        const index = id ? this._displayIndex(cell, id) : -1;
        if (index >= 0) {
          outputs.set(index, { output_type: 'display_data', data: content.data, metadata: content.metadata ?? {} });
          this._displays.set(id, { cell, index });
        }
        return;
      }
      case 'stream':
        outputs.add({ output_type: 'stream', name: content.name, text: content.text });
        return;
      case 'error':
        outputs.add({
          output_type: 'error',
          ename: content.ename,
          evalue: content.evalue,
          traceback: content.traceback
        });
        return;
      default: {
        // display_data, execute_result
        const output: nbformat.IOutput =
          type === 'execute_result'
            ? {
                output_type: 'execute_result',
                data: content.data,
                metadata: content.metadata ?? {},
                execution_count: content.execution_count ?? null
              }
            : { output_type: 'display_data', data: content.data, metadata: content.metadata ?? {} };
        const index = outputs.add(output) - 1;
        const id = content.transient?.display_id;
        if (id) {
          this._displays.set(id, { cell, index });
        }
        if (type === 'execute_result' && typeof content.execution_count === 'number') {
          cell.executionCount = content.execution_count;
          cell.executionState = 'running';
        }
      }
    }
  }

  /**
   * Where a display id is shown in a cell: one this page saw displayed, or
   * one displayed before the notebook was reopened, which the kernel also
   * wrote into the saved output's metadata (`metadata.tactus.display_id`).
   */
  private _displayIndex(cell: ICodeCellModel, id: string): number {
    const seen = this._displays.get(id);
    if (seen && seen.cell === cell && seen.index < cell.outputs.length) {
      return seen.index;
    }
    for (let i = 0; i < cell.outputs.length; i++) {
      const tactus = cell.outputs.get(i).metadata?.tactus as { display_id?: unknown } | undefined;
      if (tactus && tactus.display_id === id) {
        return i;
      }
    }
    return -1;
  }

  private _finish(cell: ICodeCellModel, count: number | null): void {
    if (count !== null) {
      cell.executionCount = count;
    }
    cell.executionState = 'idle';
    this._context.model.dirty = true;
  }

  private _cell(id: string): ICodeCellModel | null {
    const model = this._context.model;
    if (model.isDisposed) {
      return null;
    }
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      if (cell.id === id && cell.type === 'code') {
        return cell as ICodeCellModel;
      }
    }
    return null;
  }

  private _context: DocumentRegistry.IContext<INotebookModel>;
  private _active: () => boolean;
  private _displays = new Map<string, { cell: ICodeCellModel; index: number }>();
  private _isDisposed = false;
}
