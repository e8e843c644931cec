/**
 * One notebook's link to its Tactus kernel: the `tactus` comm.
 *
 * For a notebook whose kernel is a Tactus kernel (kernelspec `tactus`, or
 * language `lua`) the connector opens the comm each time the kernel
 * connects (first start, restart, kernel change, reconnect after the old
 * comm went away) with `{"tactus": <metadata.tactus or null>, "protocol": "1.1"}`, and folds the
 * kernel's ops into `metadata.tactus` (see merge.ts), marking the notebook
 * dirty so a save persists them. Other kernels are left alone: nothing is
 * sent to them and the notebook's metadata is never touched.
 */

import { ISessionContext, Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { JSONObject, JSONValue } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { answersReset, applyOp, HeldRecords, isTactusKernel, metadataProblem, PROTOCOL, resetOp } from './merge';
import { OrphanOutputs } from './orphans';

export const COMM_TARGET = 'tactus';
export const METADATA_KEY = 'tactus';

export class TactusConnector implements IDisposable {
  constructor(context: DocumentRegistry.IContext<INotebookModel>) {
    this._context = context;
    const session = context.sessionContext;
    session.kernelChanged.connect(this._onKernelChanged, this);
    session.connectionStatusChanged.connect(this._onConnectionStatus, this);
    session.statusChanged.connect(this._onStatus, this);
    context.model.metadataChanged.connect(this._onMetadataChanged, this);
    context.saveState.connect(this._onSaveState, this);
    this._orphans = new OrphanOutputs(context, () => this._isTactus);
    void session.ready.then(() => this._maybeOpen());
  }

  /** Emitted when the stored records, the connection or the unsaved count change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get context(): DocumentRegistry.IContext<INotebookModel> {
    return this._context;
  }

  /** The notebook's `metadata.tactus` (undefined when absent). */
  get stored(): unknown {
    return this._context.model.isDisposed ? undefined : this._context.model.getMetadata(METADATA_KEY);
  }

  /** Why the stored block cannot be used, or null. */
  get problem(): string | null {
    return metadataProblem(this.stored);
  }

  /** True while the comm to a Tactus kernel is open. */
  get connected(): boolean {
    return this._comm !== null && !this._comm.isDisposed;
  }

  /** True when the current kernel is a Tactus kernel. */
  get isTactus(): boolean {
    return this._isTactus;
  }

  /** Procedures the kernel changed since the notebook was last saved. */
  get unsaved(): number {
    return this._unsaved.size;
  }

  /** Procedures whose updates are held back (the stored block is unusable). */
  get held(): number {
    return Object.keys(this._held).length;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Ask the kernel to forget these procedures' checkpoints (no keys: all).
   * The kernel answers with a `delete` op, which removes them from the
   * notebook. Returns false when no Tactus kernel is connected.
   */
  reset(keys?: string[]): boolean {
    if (!this._comm || this._comm.isDisposed) {
      return false;
    }
    this._comm.send(resetOp(keys) as JSONObject);
    return true;
  }

  /**
   * A card's **Ask again**: make the kernel forget `key`'s checkpoint at
   * `index` and every later one (`index` null: the whole record). Resolves
   * true once the kernel has answered (an update or delete naming `key`), so
   * a cell run after it is asked anew; false when no Tactus kernel is
   * connected or no answer came within `timeoutMs`.
   */
  resetFrom(key: string, index: number | null, timeoutMs = 10_000): Promise<boolean> {
    const comm = this._comm;
    if (!comm || comm.isDisposed) {
      return Promise.resolve(false);
    }
    return new Promise<boolean>(resolve => {
      const done = (answered: boolean) => {
        window.clearTimeout(timer);
        this._waiters.delete(waiter);
        resolve(answered);
      };
      const waiter = (op: unknown) => {
        if (op === null || answersReset(op, key)) {
          done(op !== null);
        }
      };
      const timer = window.setTimeout(() => done(false), timeoutMs);
      this._waiters.add(waiter);
      comm.send(resetOp([key], index === null ? undefined : { [key]: index }) as JSONObject);
    });
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._orphans.dispose();
    this._dropComm();
    Signal.clearData(this);
  }

  private _onKernelChanged(): void {
    // A different kernel: the old comm belongs to it.
    this._dropComm();
    this._isTactus = false;
    this._changed.emit();
    void this._maybeOpen();
  }

  private _onConnectionStatus(_: ISessionContext, status: Kernel.ConnectionStatus): void {
    if (status === 'connected') {
      void this._maybeOpen();
    }
  }

  private _onStatus(_: ISessionContext, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // The kernel connection disposes its comms; a fresh one is opened
      // with the stored metadata once the restarted kernel connects.
      this._dropComm();
      this._changed.emit();
    }
  }

  private _onMetadataChanged(_: unknown, change: { key: string }): void {
    if (change.key === METADATA_KEY) {
      this._changed.emit();
    }
  }

  private _onSaveState(_: unknown, state: DocumentRegistry.SaveState): void {
    if (state === 'completed' && this._unsaved.size) {
      this._unsaved.clear();
      this._changed.emit();
    }
  }

  private _dropComm(): void {
    const comm = this._comm;
    this._comm = null;
    for (const waiter of [...this._waiters]) {
      waiter(null); // the kernel will not answer on this comm
    }
    this._held = {};
    this._toldHeld = false;
    if (comm && !comm.isDisposed) {
      comm.dispose();
    }
  }

  private async _maybeOpen(): Promise<void> {
    const kernel = this._context.sessionContext.session?.kernel;
    if (this._isDisposed || !kernel || kernel.isDisposed || kernel.connectionStatus !== 'connected') {
      return;
    }
    if (this.connected || this._opening === kernel) {
      return;
    }
    this._opening = kernel;
    try {
      let language: string | undefined;
      if (kernel.name !== 'tactus') {
        try {
          language = (await kernel.spec)?.language;
        } catch {
          language = undefined;
        }
      }
      if (this._isDisposed || kernel !== this._context.sessionContext.session?.kernel || kernel.isDisposed) {
        return;
      }
      this._isTactus = isTactusKernel(kernel.name, language);
      if (this._isTactus && !this.connected && kernel.connectionStatus === 'connected') {
        const comm = kernel.createComm(COMM_TARGET);
        comm.onMsg = msg => this._onCommMsg(comm, msg);
        comm.onClose = () => {
          if (this._comm === comm) {
            this._comm = null;
            this._changed.emit();
          }
        };
        this._comm = comm;
        this._held = {};
        this._toldHeld = false;
        const stored = this.stored;
        comm.open({ [METADATA_KEY]: stored === undefined ? null : (stored as JSONValue), protocol: PROTOCOL });
      }
      this._changed.emit();
    } finally {
      if (this._opening === kernel) {
        this._opening = null;
      }
    }
  }

  private _onCommMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm || this._isDisposed) {
      return;
    }
    const model = this._context.model;
    const result = applyOp(this.stored, msg.content.data, this._held);
    this._held = result.held;
    if (result.ignored) {
      console.warn(result.ignored);
      if (!this._toldIgnored) {
        this._toldIgnored = true;
        Notification.warning(result.ignored, { autoClose: false });
      }
    }
    if (result.warning) {
      Notification.warning(result.warning, { autoClose: false });
    }
    if (result.changed && result.metadata) {
      model.setMetadata(METADATA_KEY, result.metadata);
      model.dirty = true;
      for (const key of result.touched) {
        this._unsaved.add(key);
      }
      if (result.replaced) {
        Notification.info(
          'Tactus: after the reset, the unusable metadata.tactus block was replaced with the kernel\'s checkpoints.',
          { autoClose: 8000 }
        );
      }
    } else if (result.problem && result.touched.length && !this._toldHeld) {
      this._toldHeld = true;
      Notification.warning(
        `Tactus: new checkpoints are not written into this notebook, because its metadata.tactus cannot be used ` +
          `(${result.problem}). Fix it by hand, or reset (Tactus: Show recorded checkpoints → Clear all, ` +
          `or %tactus reset) to replace it with the kernel's checkpoints.`,
        { autoClose: false }
      );
    }
    this._changed.emit();
    for (const waiter of [...this._waiters]) {
      waiter(msg.content.data);
    }
  }

  private _context: DocumentRegistry.IContext<INotebookModel>;
  private _orphans: OrphanOutputs;
  private _waiters = new Set<(op: unknown) => void>();
  private _comm: Kernel.IComm | null = null;
  private _opening: Kernel.IKernelConnection | null = null;
  private _isTactus = false;
  private _held: HeldRecords = {};
  private _toldHeld = false;
  private _toldIgnored = false;
  private _unsaved = new Set<string>();
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
}
