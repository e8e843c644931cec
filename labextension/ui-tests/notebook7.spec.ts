/**
 * The extension in Jupyter Notebook 7 (`jupyter notebook`), which is built
 * from JupyterLab's components: it loads, a card is answered with a click,
 * the checkpoint is saved in `metadata.tactus`, and an answered card is
 * drawn by the extension's renderer. This file starts its own Notebook 7
 * server (startJupyter in global-setup.ts), next to the JupyterLab one.
 */
import { expect, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { badge, cell } from './helpers';

import { IJupyter, startJupyter } from './global-setup';

const ARTIFACTS = path.join(__dirname, 'artifacts');

const SHIP = `procedure({name = "ship"}, function()
  local ok = Human.approve({message = "Ship it?", context = {env = "prod"}})
  print("approved:", ok)
  return {ok = ok}
end)`;

const RECORDED_CARD = {
  output_type: 'display_data',
  metadata: {},
  data: {
    'application/vnd.tactus.card+json': {
      version: 1,
      state: 'answered',
      request: 'input',
      procedure: 'colour',
      name: 'Favourite colour?',
      message: 'Favourite colour?',
      context: null,
      answer: 'Blue sky',
      answer_text: 'Answered "Blue sky"',
      at: '2026-12-05T03:13:26Z',
      index: 0,
      cell_id: 'cell-2'
    },
    'text/html': '<div class="tactus-html-fallback">Favourite colour? Answered "Blue sky"</div>',
    'text/plain': '[Tactus] Favourite colour? -> Answered "Blue sky"'
  }
};

let server: IJupyter | undefined;

test.beforeAll(async () => {
  server = await startJupyter('notebook');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

test.afterAll(async () => {
  await server?.stop();
});

test('in Notebook 7 the card is answered and the checkpoint saved in metadata.tactus', async ({ page }) => {
  const name = 'notebook7.ipynb';
  const file = path.join(server!.root, name);
  const kernelspec = { name: 'tactus', display_name: 'Tactus (Lua)', language: 'lua' };
  const cells = [
    { source: SHIP, outputs: [] },
    { source: 'Human.input({message = "Favourite colour?"})', outputs: [RECORDED_CARD] }
  ].map((c, i) => ({ cell_type: 'code', id: `cell-${i + 1}`, execution_count: null, metadata: {}, ...c }));
  fs.writeFileSync(
    file,
    JSON.stringify({ cells, metadata: { kernelspec, language_info: { name: 'lua' } }, nbformat: 4, nbformat_minor: 5 })
  );

  await page.goto(`${server!.url}notebooks/${name}`);
  await expect(cell(page, 0)).toBeVisible({ timeout: 120_000 });
  // It is Notebook 7, not JupyterLab.
  expect(await page.evaluate(() => (window as any).jupyterapp?.name)).toBe('Jupyter Notebook');
  await expect(badge(page)).toHaveAttribute('title', /Tactus kernel connected/, { timeout: 120_000 });
  // The saved answered card is drawn by the extension's renderer.
  await expect(cell(page, 1).locator('.jp-TactusCard-answer')).toHaveText('Answered "Blue sky"');
  await expect(cell(page, 1).locator('.tactus-html-fallback')).toHaveCount(0);

  await cell(page, 0).locator('.cm-content').click();
  await page.keyboard.press('Shift+Enter');
  const approve = cell(page, 0).getByRole('button', { name: 'Approve' });
  await expect(approve).toBeVisible({ timeout: 60_000 });
  await approve.click();
  await expect(cell(page, 0).locator('.jp-InputArea-prompt')).toHaveText(/\[\d+\]/, { timeout: 60_000 });
  await expect(cell(page, 0).locator('.jp-OutputArea')).toContainText(/approved:\s+true/);
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('1');
  await page.screenshot({ path: path.join(ARTIFACTS, 'notebook7.png') });

  await page.evaluate(() => (window as any).jupyterapp.commands.execute('docmanager:save'));
  let saved: any;
  await expect
    .poll(
      () => {
        saved = JSON.parse(fs.readFileSync(file, 'utf8')).metadata.tactus;
        return saved?.procedures?.ship?.checkpoints?.length ?? 0;
      },
      { timeout: 20_000 }
    )
    .toBe(1);
  expect(saved.version).toBe(1);
  expect(saved.procedures.ship.checkpoints[0]).toMatchObject({
    kind: 'human',
    request: 'approve',
    message: 'Ship it?',
    value: true
  });
});
