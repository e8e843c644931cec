/**
 * End to end, in a real JupyterLab and a real Chromium: procedure cells on
 * the Tactus kernel record checkpoints, the extension stores them in the
 * notebook's metadata.tactus, a save writes them to disk, and after a kernel
 * restart a re-run replays them (no re-execution, no second click).
 */
import { expect, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { badge, cell, command, executionDone, kernelReady, notebook, open, restartKernel, runCell, save } from './helpers';

const DEMO = `procedure({name = "demo"}, function()
  local v = Step.run("pick", function() print("computing"); return 42 end)
  return {v = v}
end)`;

const SHIP = `procedure({name = "ship"}, function()
  local ok = Human.approve({message = "Ship it?"})
  print("approved:", ok)
  return {ok = ok}
end)`;

const ARTIFACTS = path.join(__dirname, 'artifacts');
const NAME = 'tactus-e2e.ipynb';

function readTactus(file: string): any {
  return JSON.parse(fs.readFileSync(file, 'utf8')).metadata.tactus;
}

/** Save, then wait until the file on disk holds a metadata.tactus that passes `check`; returns it. */
async function saveAndRead(page: Page, file: string, check: (tactus: any) => boolean): Promise<any> {
  await save(page);
  let tactus: any;
  await expect
    .poll(
      () => {
        tactus = readTactus(file);
        return tactus !== undefined && check(tactus);
      },
      { timeout: 20_000 }
    )
    .toBe(true);
  return tactus;
}

test('checkpoints round trip through metadata.tactus, survive a restart and replay', async ({ page }) => {
  const root = process.env.TACTUS_E2E_ROOT!;
  const file = path.join(root, NAME);
  fs.writeFileSync(file, notebook([DEMO, SHIP]));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const started = Date.now();

  await open(page, NAME);
  await kernelReady(page);
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('0');

  // Lua syntax highlighting: `local` and `function` are styled keyword tokens.
  const keyword = cell(page, 0).locator('.cm-line span', { hasText: /^local$/ }).first();
  await expect(keyword).toBeVisible();
  const colors = await cell(page, 0).evaluate(node => {
    const line = node.querySelector('.cm-line')!;
    const kw = Array.from(node.querySelectorAll('.cm-line span')).find(s => s.textContent === 'local')!;
    return { keyword: getComputedStyle(kw).color, text: getComputedStyle(line).color };
  });
  expect(colors.keyword).not.toEqual(colors.text);

  // 1. A step runs once and is recorded.
  await runCell(page, 0);
  await executionDone(page, 0);
  const out0 = cell(page, 0).locator('.jp-OutputArea');
  await expect(out0).toContainText('computing');
  await expect(out0).toContainText(/v\s*=?\s*42/);

  // 2. A person approves in the card.
  await runCell(page, 1);
  const card = cell(page, 1).locator('.jp-OutputArea');
  await expect(card).toContainText('Ship it?');
  await card.getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 1);
  await expect(card).toContainText(/approved:\s+true/);
  // the answered card is static now: drawn by the extension, no button left to click
  await expect(card.locator('.jp-TactusCard-answer')).toHaveText('Approved');
  await expect(card.getByRole('button', { name: 'Approve' })).toHaveCount(0);
  await card.screenshot({ path: path.join(ARTIFACTS, 'approved-card.png') });
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('2');
  await expect(badge(page).locator('.jp-TactusBadge-unsaved')).toBeVisible();

  // 3. Saving writes the records into the file.
  const saved = await saveAndRead(page, file, t => Boolean(t.procedures?.demo && t.procedures?.ship));
  expect(saved.version).toBe(1);
  const [step] = saved.procedures.demo.checkpoints;
  expect(step).toMatchObject({ kind: 'step', name: 'pick', value: 42 });
  expect(step.at).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
  const human = saved.procedures.ship.checkpoints.find((c: any) => c.kind === 'human');
  expect(human).toMatchObject({ kind: 'human', request: 'approve', message: 'Ship it?', value: true });
  await expect(badge(page).locator('.jp-TactusBadge-unsaved')).toBeHidden();

  // 4. After a restart the kernel knows only what the notebook sent back.
  await restartKernel(page);
  await command(page, 'notebook:clear-all-cell-outputs');
  await runCell(page, 0);
  await executionDone(page, 0);
  await expect(out0).toContainText(/v\s*=?\s*42/);
  await expect(out0).not.toContainText('computing');
  await runCell(page, 1);
  await executionDone(page, 1);
  await expect(card).toContainText(/approved:\s+true/);
  await expect(card).toContainText('Ship it?');
  await card.screenshot({ path: path.join(ARTIFACTS, 'replayed-card.png') });

  // 5. The dialog lists the records; Clear makes the kernel forget one.
  await badge(page).click();
  const dialog = page.locator('.jp-Dialog .jp-TactusCheckpoints');
  await expect(dialog.locator('.jp-TactusCheckpoints-procedure')).toHaveCount(2);
  const demo = dialog.locator('[data-procedure="demo"]');
  await expect(demo.locator('.jp-TactusCheckpoints-status')).toHaveText('completed');
  await expect(demo.locator('tbody tr')).toHaveCount(1);
  await expect(demo.locator('tbody tr')).toContainText('pick');
  await expect(dialog.locator('[data-procedure="ship"] tbody')).toContainText('human');
  await page.locator('.jp-Dialog').screenshot({ path: path.join(ARTIFACTS, 'checkpoints-dialog.png') });
  await demo.getByRole('button', { name: 'Clear' }).click();
  await demo.getByRole('button', { name: /Confirm clear/ }).click();
  await expect(dialog.locator('[data-procedure="demo"]')).toHaveCount(0);
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('1');
  const cleared = await saveAndRead(page, file, t => !t.procedures?.demo);
  expect(Object.keys(cleared.procedures)).toEqual(['ship']);

  // ... and the next run records afresh.
  await runCell(page, 0);
  await executionDone(page, 0);
  await expect(out0).toContainText('computing');

  // 6. The command is in the palette.
  await page.keyboard.press('Control+Shift+C');
  await page.locator('#command-palette input, .lm-CommandPalette-input').first().fill('Tactus: Show');
  await expect(page.locator('.lm-CommandPalette-item', { hasText: 'Tactus: Show recorded checkpoints' })).toBeVisible();
  await page.keyboard.press('Escape');

  console.log(`end-to-end scenario took ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

test('an unusable metadata.tactus block is never written over, until a reset replaces it', async ({ page }) => {
  const file = path.join(process.env.TACTUS_E2E_ROOT!, 'corrupt.ipynb');
  const corrupt = { version: 99, procedures: 'nope' };
  fs.writeFileSync(file, notebook([DEMO], { tactus: corrupt }));
  await open(page, 'corrupt.ipynb');
  await kernelReady(page);
  // the kernel's warning, shown as a notification
  await expect(page.locator('.Toastify__toast', { hasText: 'cannot be used' }).first()).toBeVisible();
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('!');

  await runCell(page, 0);
  await executionDone(page, 0);
  await expect(cell(page, 0).locator('.jp-OutputArea')).toContainText('computing');
  await expect(page.locator('.Toastify__toast', { hasText: 'not written into this notebook' }).first()).toBeVisible();
  await command(page, 'docmanager:save');
  await expect(page.locator('.jp-NotebookPanel')).not.toHaveClass(/jp-mod-dirty/);
  expect(readTactus(file)).toEqual(corrupt);

  // Clear all (a reset) replaces the block with the kernel's (now empty) records.
  await badge(page).click();
  const dialog = page.locator('.jp-Dialog .jp-TactusCheckpoints');
  await expect(dialog.locator('.jp-TactusCheckpoints-problem')).toContainText('version must be 1');
  await dialog.getByRole('button', { name: 'Clear all' }).click();
  await dialog.getByRole('button', { name: /Confirm clear all/ }).click();
  await expect(dialog.locator('.jp-TactusCheckpoints-problem')).toHaveCount(0);
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await saveAndRead(page, file, t => t.version === 1 && Object.keys(t.procedures).length === 0);

  await runCell(page, 0);
  await executionDone(page, 0);
  await saveAndRead(page, file, t => t.procedures.demo?.checkpoints?.[0]?.value === 42);
});

test('a notebook on another kernel keeps its metadata.tactus untouched', async ({ page }) => {
  const file = path.join(process.env.TACTUS_E2E_ROOT!, 'python.ipynb');
  const stored = {
    version: 1,
    procedures: { demo: { checkpoints: [{ kind: 'step', name: 'pick', value: 7, at: '2026-01-01T00:00:00.000Z' }] } }
  };
  fs.writeFileSync(file, notebook(['print("hello from python")'], { tactus: stored }, 'python3'));
  await open(page, 'python.ipynb');
  await kernelReady(page, false);
  await runCell(page, 0);
  await executionDone(page, 0);
  await expect(cell(page, 0).locator('.jp-OutputArea')).toContainText('hello from python');
  // the recorded checkpoints are still shown, but nothing can be cleared
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('1');
  await expect(badge(page)).toHaveAttribute('title', /not connected/);
  await command(page, 'docmanager:save');
  await expect(page.locator('.jp-NotebookPanel')).not.toHaveClass(/jp-mod-dirty/);
  await expect.poll(() => JSON.parse(fs.readFileSync(file, 'utf8')).cells[0].execution_count).toBe(1);
  expect(readTactus(file)).toEqual(stored);
});

test('a page reloaded while the kernel runs on gets the unsaved records back', async ({ page }) => {
  const file = path.join(process.env.TACTUS_E2E_ROOT!, 'reload.ipynb');
  fs.writeFileSync(file, notebook([DEMO]));
  await open(page, 'reload.ipynb');
  await kernelReady(page);
  await runCell(page, 0);
  await executionDone(page, 0);
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('1');
  // Reload without saving: the notebook comes back from disk without the record,
  // reconnects to the same kernel, and the kernel sends what the notebook lacks.
  await page.goto(`${process.env.TACTUS_E2E_URL}lab/tree/reload.ipynb`);
  await expect(cell(page, 0)).toBeVisible({ timeout: 120_000 });
  await kernelReady(page);
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('1');
  await saveAndRead(page, file, t => t.procedures?.demo?.checkpoints?.[0]?.value === 42);
});
