/**
 * The live timeline, errors and Shift-Tab as a person meets them in a real
 * JupyterLab and Chromium: the timeline is one summary line that ticks while
 * a card waits and opens to its rows, becomes static HTML when the cell ends
 * (readable in the dark theme too); a table raised as an error reads as a
 * Lua constructor with no kernel frames; Shift-Tab inside a call shows the
 * primitive's doc. Screenshots go to ui-tests/artifacts/timeline-*.png.
 */
import { expect, Locator, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { cell, command, executionDone, kernelReady, notebook, runCell } from './helpers';

// An unnamed procedure (keyed by the cell id): cards and the timeline name it by its cell.
const IMPORT = `-- Nightly import: 200 rows, one approval
function busy(s) local t = os.clock() while os.clock() - t < s do end end
procedure(function()
  for i = 1, 100 do Step.run("row_" .. i, function() busy(0.006); return i end) end
  local ok = Human.approve({message = "Import the second half?"})
  for i = 101, 200 do Step.run("row_" .. i, function() busy(0.006); return i end) end
  return {ok = ok}
end)`;

const FAILS = `procedure({name = "quota"}, function()
  Step.run("check", function() error({code = 42, why = "no quota"}) end)
end)`;

const ARTIFACTS = path.join(__dirname, 'artifacts');
const NAME = 'tactus-timeline.ipynb';

/** The last duration a summary line shows ("950 ms", "3.0 s"), in seconds. */
function secondsShown(text: string): number {
  const all = [...text.matchAll(/(\d+(?:\.\d+)?) (ms|s)\b/g)];
  const [, value, unit] = all[all.length - 1];
  return Number(value) / (unit === 'ms' ? 1000 : 1);
}

test('the timeline is one summary line that ticks while a card waits and opens to its rows', async ({ page }) => {
  fs.writeFileSync(path.join(process.env.TACTUS_E2E_ROOT!, NAME), notebook([IMPORT, FAILS, '']));
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.goto(`${process.env.TACTUS_E2E_URL}lab/tree/${NAME}?reset`);
  await expect(cell(page, 0)).toBeVisible({ timeout: 120_000 });
  await kernelReady(page);

  await runCell(page, 0);
  const out = cell(page, 0).locator('.jp-OutputArea');
  await expect(out.getByRole('button', { name: 'Approve' })).toBeEnabled();
  // the card names the cell, not its UUID
  await expect(out).toContainText('cell 1: -- Nightly import: 200 rows, one approval');
  const summary = out.locator('.tactus-timeline-summary');
  await expect(summary).toContainText('waiting for a human');
  await expect(summary).toContainText('100 steps');
  // the wait ticks: two seconds later the line says so
  const first = secondsShown(await summary.innerText());
  await expect.poll(async () => secondsShown(await summary.innerText()), { timeout: 15_000 }).toBeGreaterThanOrEqual(
    first + 2
  );
  await expect(out.locator('.tactus-timeline-rows')).toBeHidden(); // collapsed by default
  await out.screenshot({ path: path.join(ARTIFACTS, 'timeline-waiting.png') });

  // Show steps opens the rows, and they stay open while the line ticks on
  await out.getByRole('button', { name: 'Show steps' }).click();
  const rows = out.locator('.tactus-timeline-rows');
  await expect(rows).toBeVisible();
  await expect(rows).toContainText('step · row_100');
  await expect(rows).toContainText('human · Import the second half?');
  const opened = secondsShown(await summary.innerText());
  await expect.poll(async () => secondsShown(await summary.innerText()), { timeout: 15_000 }).toBeGreaterThanOrEqual(
    opened + 1
  );
  await expect(rows).toBeVisible();
  await out.screenshot({ path: path.join(ARTIFACTS, 'timeline-rows-open.png') });

  // the cell ends: the timeline is static HTML, collapsed, opening to the rows
  await out.getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 0);
  const details = out.locator('details.tactus-timeline');
  await expect(details).toBeVisible();
  await expect(details.locator('summary')).toContainText('done');
  await expect(details.locator('summary')).toContainText('200 steps');
  await expect(details.locator('.tactus-timeline-rows')).toBeHidden();
  await expect(out.getByRole('button', { name: 'Show steps' })).toHaveCount(0); // its widgets are gone
  await details.screenshot({ path: path.join(ARTIFACTS, 'timeline-done.png') });
  await details.locator('summary').click();
  await expect(details.locator('.tactus-timeline-rows')).toBeVisible();
  await expect(details.locator('.tactus-timeline-rows')).toContainText('step · row_');
  await details.screenshot({ path: path.join(ARTIFACTS, 'timeline-done-open.png') });

  // an error raised as a table reads as Lua, without the kernel's frames
  await runCell(page, 1);
  await executionDone(page, 1);
  const error = cell(page, 1).locator('.jp-OutputArea');
  await expect(error).toContainText('LuaError: {code = 42, why = "no quota"}');
  await expect(error).toContainText("[cell 2]:2: in local 'fn'");
  await expect(error).not.toContainText('raw_xpcall');
  await expect(error).not.toContainText('[tactus');
  await error.screenshot({ path: path.join(ARTIFACTS, 'timeline-error.png') });

  // Shift-Tab inside a call shows the primitive's doc
  await cell(page, 2).locator('.cm-content').click();
  await page.keyboard.type('Human.approve({message = ', { delay: 20 });
  await page.keyboard.press('Shift+Tab');
  const tooltip = page.locator('.jp-Tooltip');
  await expect(tooltip).toContainText('Human.approve({message, context, timeout, default, on_timeout})');
  await page.screenshot({ path: path.join(ARTIFACTS, 'timeline-shift-tab.png'), clip: await clipAround(cell(page, 2)) });
  await page.keyboard.press('Escape');

  // the dark theme: the same view reads in it
  await command(page, 'apputils:change-theme', { theme: 'JupyterLab Dark' });
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false');
  await cell(page, 0).scrollIntoViewIfNeeded();
  const colors = await details.evaluate(node => ({
    text: getComputedStyle(node).color,
    background: getComputedStyle(node).backgroundColor
  }));
  expect(colors.text).not.toEqual(colors.background);
  await details.screenshot({ path: path.join(ARTIFACTS, 'timeline-done-dark.png') });
  await command(page, 'apputils:change-theme', { theme: 'JupyterLab Light' });
});

async function clipAround(locator: Locator): Promise<{ x: number; y: number; width: number; height: number }> {
  const box = (await locator.boundingBox())!;
  return { x: box.x, y: box.y, width: Math.min(1200, box.width + 300), height: box.height + 160 };
}
