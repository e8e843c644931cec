/**
 * What every browser spec does the way a person does it: write a notebook
 * to the served folder, open it, wait for the kernel and the Tactus comm,
 * run a cell with Shift+Enter, save, restart. One copy, so a change in
 * JupyterLab's markup is fixed in one place.
 */
import { expect, Locator, Page } from '@playwright/test';
import * as fs from 'fs';

/** A code cell to write into a test notebook: its source, and optionally an id and saved outputs. */
export interface ICell {
  source: string;
  id?: string;
  outputs?: object[];
}

/** A notebook's JSON text: code cells (ids `cell-1`, `cell-2`, ... unless given), for the Tactus kernel or another. */
export function notebook(cells: (string | ICell)[], metadata: object = {}, kernel = 'tactus'): string {
  const kernelspec =
    kernel === 'tactus'
      ? { name: 'tactus', display_name: 'Tactus (Lua)', language: 'lua' }
      : { name: kernel, display_name: kernel, language: 'python' };
  return JSON.stringify(
    {
      cells: cells.map((c, i) => {
        const cell = typeof c === 'string' ? { source: c } : c;
        return {
          cell_type: 'code',
          id: cell.id ?? `cell-${i + 1}`,
          execution_count: null,
          metadata: {},
          outputs: cell.outputs ?? [],
          source: cell.source
        };
      }),
      metadata: { kernelspec, language_info: { name: kernelspec.language }, ...metadata },
      nbformat: 4,
      nbformat_minor: 5
    },
    null,
    1
  );
}

export function readNotebook(file: string): any {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** The Tactus badge in the notebook's toolbar (its title says whether the comm is open). */
export function badge(page: Page): Locator {
  return page.locator('.jp-NotebookPanel-toolbar .jp-TactusBadge-button');
}

export function cell(page: Page, index: number): Locator {
  return page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell').nth(index);
}

export function output(page: Page, index: number): Locator {
  return cell(page, index).locator('.jp-OutputArea');
}

/** The Tactus comm is open (the kernel may be busy: a cell waiting for a person). */
export async function connected(page: Page): Promise<void> {
  await expect(badge(page)).toHaveAttribute('title', /Tactus kernel connected/, { timeout: 120_000 });
}

/** Wait until the current notebook's kernel is idle and (for Tactus) the comm is open. */
export async function kernelReady(page: Page, tactus = true): Promise<void> {
  await page.waitForFunction(
    () => {
      const panel = (window as any).jupyterapp?.shell?.currentWidget;
      const kernel = panel?.sessionContext?.session?.kernel;
      return kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
    },
    undefined,
    { timeout: 120_000 }
  );
  if (tactus) {
    await connected(page);
  }
}

/** Open a notebook of the served folder in JupyterLab, with a fresh workspace. */
export async function open(page: Page, name: string): Promise<void> {
  await page.goto(`${process.env.TACTUS_E2E_URL}lab/tree/${name}?reset`);
  await expect(cell(page, 0)).toBeVisible({ timeout: 120_000 });
}

/** Run a JupyterLab command; with `wait` false, do not wait for it (it may open a dialog). */
export async function command(page: Page, id: string, args: object = {}, wait = true): Promise<void> {
  await page.evaluate(
    async ([id, args, wait]) => {
      const done = (window as any).jupyterapp.commands.execute(id, args);
      if (wait) {
        await done;
      }
    },
    [id, args, wait] as const
  );
}

/** Run one cell the way a person does: click into it, Shift+Enter. */
export async function runCell(page: Page, index: number): Promise<void> {
  await cell(page, index).locator('.cm-content').click();
  await page.keyboard.press('Shift+Enter');
}

/** The cell's prompt shows an execution count: its reply has come. */
export async function executionDone(page: Page, index: number): Promise<void> {
  await expect(cell(page, index).locator('.jp-InputArea-prompt')).toHaveText(/\[\d+\]/, { timeout: 60_000 });
}

/** Save the notebook and wait until JupyterLab no longer marks it dirty. */
export async function save(page: Page): Promise<void> {
  await command(page, 'docmanager:save');
  await expect(page.locator('.jp-NotebookPanel')).not.toHaveClass(/jp-mod-dirty/);
}

/** Restart the kernel from the menu, accept the dialog, wait for the new kernel and the comm. */
export async function restartKernel(page: Page): Promise<void> {
  await command(page, 'kernelmenu:restart', {}, false);
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  // The comm is reopened with the stored metadata once the new kernel connects.
  await kernelReady(page);
}
