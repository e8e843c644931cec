/**
 * Issue 24, in a real JupyterLab and Chromium: Run All on a recorded
 * notebook replays every call from metadata.tactus and leaves the record as
 * it was. The kernel sends no record op, so the extension neither writes
 * the metadata nor counts a procedure as changed since the last save, and
 * the saved file's record is the one it had, byte for byte (the recorded
 * answers' times and the human waits' durations included).
 */
import { expect, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { badge, command, connected, open, save } from './helpers';

const EXAMPLE = path.join(__dirname, '..', '..', 'notebooks', 'human-in-the-loop.ipynb');
const NAME = 'replay-e2e.ipynb';

function tactusText(file: string): string {
  return JSON.stringify(JSON.parse(fs.readFileSync(file, 'utf8')).metadata.tactus);
}

test('Run All on a recorded notebook leaves metadata.tactus as it was', async ({ page }) => {
  const file = path.join(process.env.TACTUS_E2E_ROOT!, NAME);
  fs.copyFileSync(EXAMPLE, file);
  const recorded = tactusText(file);
  expect(recorded.length).toBeGreaterThan(1000);

  await open(page, NAME);
  const codeCells = page.locator('.jp-NotebookPanel .jp-Notebook .jp-CodeCell');
  await connected(page);

  // Count every write of metadata.tactus the extension makes from here on.
  await page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    (window as any).tactusWrites = 0;
    panel.context.model.metadataChanged.connect((_: unknown, change: { key: string }) => {
      if (change.key === 'tactus') {
        (window as any).tactusWrites += 1;
      }
    });
  });

  await command(page, 'notebook:run-all-cells');
  const count = await codeCells.count();
  for (let i = 0; i < count; i++) {
    await expect(codeCells.nth(i).locator('.jp-InputArea-prompt')).toHaveText(/\[\d+\]/, { timeout: 60_000 });
  }
  // the recorded answers were replayed: static cards, no button to click
  await expect(page.locator('.jp-NotebookPanel').getByText('Ada Lovelace').first()).toBeVisible();
  await expect(page.locator('.jp-NotebookPanel').getByRole('button', { name: 'Approve' })).toHaveCount(0);
  // wait for the kernel to be idle: any op it sent has arrived
  await page.waitForFunction(() => {
    const kernel = (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel;
    return kernel?.status === 'idle';
  });

  const state = await page.evaluate(() => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return {
      writes: (window as any).tactusWrites as number,
      tactus: JSON.stringify(panel.context.model.getMetadata('tactus'))
    };
  });
  expect(state.writes).toBe(0);
  expect(state.tactus).toBe(recorded);
  // nothing "changed since the last save" for the extension
  await expect(badge(page).locator('.jp-TactusBadge-unsaved')).toBeHidden();
  await expect(badge(page)).not.toHaveAttribute('title', /changed since the last save/);

  // Saving (the outputs did change) writes the record back as it was.
  await save(page);
  expect(tactusText(file)).toBe(recorded);
});
