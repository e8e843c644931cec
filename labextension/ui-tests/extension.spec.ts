/**
 * The extension's side of "cards a person can really use", in a real
 * JupyterLab and a real Chromium, clicked the way a person does:
 *
 * - an answered card (`application/vnd.tactus.card+json`) is drawn by the
 *   extension's renderer, not its HTML fallback, and **Ask again** really
 *   asks again (forgets from that checkpoint on, re-runs the cell);
 * - a card re-attached after its notebook was closed and reopened gets the
 *   cell's result and prompt number after the click;
 * - the checkpoints dialog and badge: UTC times, a cell-keyed request named
 *   after its cell, a three-digit count, readable in the dark theme.
 *
 * Helpers are copied from tactus.spec.ts (which stays as it is).
 */
import { expect, Locator, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { badge, cell, command, connected, executionDone, kernelReady, notebook, open, readNotebook, runCell, save } from './helpers';

const ARTIFACTS = path.join(__dirname, 'artifacts');
// JupyterLab's own themes; every colour of the extension must read in each.
const SLUGS: { [theme: string]: string } = {
  'JupyterLab Light': 'light',
  'JupyterLab Dark': 'dark',
  'JupyterLab Dark High Contrast': 'high-contrast'
};
const THEMES = Object.keys(SLUGS);
const CARD_MIME = 'application/vnd.tactus.card+json';

const SHIP = `procedure({name = "ship"}, function()
  local ok = Human.approve({message = "Ship it?", context = {env = "prod", image = "app:1.4"}})
  print("approved:", ok)
  return {ok = ok}
end)`;

/**
 * WCAG contrast ratio of an element's text against the first opaque
 * background behind it (the page's own, in the current theme).
 */
async function contrast(target: Locator): Promise<number> {
  return target.evaluate(node => {
    const rgba = (css: string): number[] => (css.match(/[\d.]+/g) || []).map(Number);
    const luminance = ([r, g, b]: number[]): number => {
      const c = [r, g, b].map(v => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
      });
      return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    let back: number[] | null = null;
    for (let n: Element | null = node; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) {
        back = c;
        break;
      }
    }
    const fore = rgba(getComputedStyle(node).color);
    const [a, b] = [luminance(fore), luminance(back ?? [255, 255, 255])];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  });
}

async function setTheme(page: Page, theme: string): Promise<void> {
  await command(page, 'apputils:change-theme', { theme });
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', theme, { timeout: 30_000 });
}

/** The static card the kernel shows for an answered request, as saved in a notebook. */
function answeredCard(card: object): object {
  return {
    output_type: 'display_data',
    metadata: {},
    data: {
      [CARD_MIME]: card,
      'text/html': '<div class="tactus-html-fallback">Ship it? Approved (HTML fallback)</div>',
      'text/plain': '[Tactus] Ship it? -> Approved at 03:13:26 UTC (recorded)'
    }
  };
}

// Sharper screenshots, to look at them.
test.use({ deviceScaleFactor: 2 });

test.beforeAll(() => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

test('an answered card is drawn by the renderer, and Ask again asks again', async ({ page }) => {
  const root = process.env.TACTUS_E2E_ROOT!;
  const file = path.join(root, 'ask-again.ipynb');
  const at = '2026-12-05T03:13:26.418Z';
  const stored = {
    version: 1,
    procedures: {
      ship: {
        status: 'completed',
        checkpoints: [{ kind: 'human', name: 'Ship it?', value: true, at, request: 'approve', message: 'Ship it?' }]
      }
    }
  };
  const card = {
    version: 1,
    state: 'recorded',
    request: 'approve',
    procedure: 'ship',
    name: 'Ship it?',
    message: 'Ship it?',
    context: { env: 'prod', image: 'app:1.4' },
    answer: true,
    answer_text: 'Approved',
    at,
    index: 0,
    cell_id: 'cell-1'
  };
  fs.writeFileSync(file, notebook([{ source: SHIP, outputs: [answeredCard(card)] }], { tactus: stored }));

  await open(page, 'ask-again.ipynb');
  await kernelReady(page);
  const drawn = cell(page, 0).locator('.jp-TactusCard');
  await expect(drawn).toBeVisible();
  // the renderer, not the HTML fallback
  await expect(cell(page, 0).locator('.tactus-html-fallback')).toHaveCount(0);
  await expect(drawn.locator('.jp-TactusCard-title')).toHaveText('Approval');
  await expect(drawn.locator('.jp-TactusCard-procedure')).toHaveText('procedure ship');
  await expect(drawn.locator('.jp-TactusCard-tag')).toHaveText('recorded');
  await expect(drawn.locator('.jp-TactusCard-message')).toHaveText('Ship it?');
  await expect(drawn.locator('.jp-TactusCard-context tr')).toHaveText(['envprod', 'imageapp:1.4']);
  await expect(drawn.locator('.jp-TactusCard-answer')).toHaveText('Approved');
  await expect(drawn.locator('.jp-TactusCard-time')).toHaveText('at 03:13:26 UTC');
  for (const theme of THEMES) {
    await setTheme(page, theme);
    for (const part of ['.jp-TactusCard-title', '.jp-TactusCard-message', '.jp-TactusCard-answer', '.jp-TactusCard-time']) {
      expect(await contrast(drawn.locator(part)), `${theme}: ${part}`).toBeGreaterThanOrEqual(4.5);
    }
    await drawn.screenshot({ path: path.join(ARTIFACTS, `card-recorded-${SLUGS[theme]}.png`) });
  }
  await setTheme(page, 'JupyterLab Light');

  // Ask again: the kernel forgets the answer, the cell runs and asks anew.
  await drawn.getByRole('button', { name: 'Ask again' }).click();
  const approve = cell(page, 0).getByRole('button', { name: 'Approve' });
  await expect(approve).toBeVisible({ timeout: 60_000 });
  await expect(cell(page, 0).locator('.jp-TactusCard')).toHaveCount(0);
  await expect(cell(page, 0).locator('.jp-InputArea-prompt')).toHaveText('[*]:');
  await expect(badge(page).locator('.jp-TactusBadge-count')).toHaveText('0');
  // this time the person says no
  await cell(page, 0).getByRole('button', { name: 'Reject' }).click();
  await executionDone(page, 0);
  await expect(cell(page, 0).locator('.jp-OutputArea')).toContainText(/approved:\s+false/);
  await save(page);
  await expect
    .poll(() => readNotebook(file).metadata.tactus.procedures.ship.checkpoints.map((c: any) => c.value))
    .toEqual([false]);
});

test('a card re-attached after the notebook was closed and reopened gets its result and prompt', async ({ page }) => {
  const root = process.env.TACTUS_E2E_ROOT!;
  const name = 'reopen.ipynb';
  const file = path.join(root, name);
  fs.writeFileSync(file, notebook(['x = 40', SHIP]));
  await open(page, name);
  await kernelReady(page);
  await runCell(page, 0);
  await executionDone(page, 0);
  await runCell(page, 1);
  await expect(cell(page, 1).getByRole('button', { name: 'Approve' })).toBeVisible({ timeout: 60_000 });
  await save(page);

  // Close the notebook's tab while the card waits (the kernel runs on) ...
  await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.close());
  const dialog = page.locator('.jp-Dialog');
  if (await dialog.isVisible()) {
    await dialog.getByRole('button', { name: /^Save$/ }).click();
  }
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(0);
  // ... and open it again: a new kernel connection, with no future for the waiting request.
  await command(page, 'docmanager:open', { path: name });
  await expect(cell(page, 1)).toBeVisible({ timeout: 60_000 });
  await connected(page);
  const approve = cell(page, 1).getByRole('button', { name: 'Approve' });
  await expect(approve).toBeEnabled({ timeout: 60_000 });
  await cell(page, 1).screenshot({ path: path.join(ARTIFACTS, 'reopened-card-waiting.png') });
  await approve.click();

  const out = cell(page, 1).locator('.jp-OutputArea');
  await expect(out).toContainText(/approved:\s+true/, { timeout: 30_000 });
  // the waiting card found by its display id after the reopen, and made static there
  await expect(cell(page, 1).locator('.jp-TactusCard .jp-TactusCard-answer')).toHaveText('Approved');
  await expect(out.locator('.jp-OutputArea-executeResult')).toContainText(/ok\s*=?\s*true/);
  await expect(cell(page, 1).locator('.jp-InputArea-prompt')).toHaveText('[2]:');
  await cell(page, 1).screenshot({ path: path.join(ARTIFACTS, 'reopened-card-answered.png') });
  // the result is part of the notebook: a save writes it
  await save(page);
  const saved = readNotebook(file).cells[1];
  expect(saved.execution_count).toBe(2);
  expect(saved.outputs.map((o: any) => o.output_type)).toEqual(
    expect.arrayContaining(['stream', 'execute_result'])
  );
  expect(readNotebook(file).metadata.tactus.procedures.ship.checkpoints[0]).toMatchObject({
    kind: 'human',
    value: true
  });
});

const CELL_ID = '0c6c5d1e-9a4b-4f5e-8d1c-3b2a1f0e9d8c';
const COLOUR = 'Human.input({message = "Favourite colour?"})';
const LOOP = `procedure({name = "loop"}, function()
  local total = 0
  for i = 1, 120 do total = total + Step.run("step " .. i, function() return i end) end
  return {total = total}
end)`;

test('dialog and badge: UTC times, cells named, three digits, readable in the dark and high-contrast themes', async ({ page }) => {
  const root = process.env.TACTUS_E2E_ROOT!;
  const name = 'dialog.ipynb';
  fs.writeFileSync(path.join(root, name), notebook([{ source: COLOUR, id: CELL_ID }, LOOP]));
  await open(page, name);
  await kernelReady(page);

  // A request outside a procedure, answered in its card.
  await runCell(page, 0);
  const box = cell(page, 0).locator('.jp-OutputArea input[type="text"]');
  await expect(box).toBeVisible({ timeout: 60_000 });
  await box.fill('Blue');
  await cell(page, 0).getByRole('button', { name: 'Submit' }).click();
  await executionDone(page, 0);
  const prompt = (await cell(page, 0).locator('.jp-InputArea-prompt').textContent())!.match(/\d+/)![0];
  // 120 steps: a three-digit badge.
  await runCell(page, 1);
  await executionDone(page, 1);
  const count = badge(page).locator('.jp-TactusBadge-count');
  await expect(count).toHaveText('121');
  const label = `cell [${prompt}] · ${COLOUR}`;
  await expect(badge(page)).toHaveAttribute('title', new RegExp(`\\(${escape(label)}, loop\\)`));

  for (const theme of THEMES) {
    await setTheme(page, theme);
    const slug = SLUGS[theme];
    // the count fits its pill, and the pill its button
    const [pill, button] = [await count.boundingBox(), await badge(page).boundingBox()];
    const inner = await count.evaluate(n => ({ scroll: n.scrollWidth, client: n.clientWidth }));
    expect(inner.scroll).toBeLessThanOrEqual(inner.client);
    expect(pill!.x + pill!.width).toBeLessThanOrEqual(button!.x + button!.width);
    expect(await contrast(count)).toBeGreaterThanOrEqual(4.5);
    await badge(page).screenshot({ path: path.join(ARTIFACTS, `badge-${slug}.png`) });

    await badge(page).click();
    const dialog = page.locator('.jp-Dialog .jp-TactusCheckpoints');
    const asked = dialog.locator(`[data-procedure="${CELL_ID}"]`);
    await expect(asked.locator('.jp-TactusCheckpoints-key')).toHaveText(label);
    await expect(asked.locator('.jp-TactusCheckpoints-key')).toHaveAttribute('title', CELL_ID);
    await expect(asked.locator('tbody tr td').nth(2)).toHaveText('Favourite colour?');
    await expect(asked.locator('.jp-TactusCheckpoints-at')).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
    await expect(asked.locator('.jp-TactusCheckpoints-last')).toHaveText(
      /^last \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/
    );
    const completed = dialog.locator('[data-procedure="loop"] .jp-TactusCheckpoints-status');
    await expect(completed).toHaveText('completed');
    for (const part of [
      completed,
      asked.locator('.jp-TactusCheckpoints-key'),
      asked.locator('.jp-TactusCheckpoints-at'),
      asked.locator('.jp-TactusCheckpoints-last')
    ]) {
      expect(await contrast(part), `${theme}: ${await part.getAttribute('class')}`).toBeGreaterThanOrEqual(4.5);
    }
    await page.locator('.jp-Dialog-content').screenshot({ path: path.join(ARTIFACTS, `dialog-${slug}.png`) });
    await page.locator('.jp-Dialog .jp-mod-accept').click();
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  }
  await setTheme(page, 'JupyterLab Light');
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('every state and kind of answered card is drawn, marked and readable', async ({ page }) => {
  const base = { version: 1, context: null, at: '2026-12-05T09:05:07Z', cell_id: null };
  const cards: { [slug: string]: object } = {
    'approve-rejected': {
      ...base, state: 'answered', request: 'approve', procedure: 'ship', name: 'Ship it?', message: 'Ship it?',
      context: { env: 'prod' }, answer: false, answer_text: 'Rejected', index: 0
    },
    'input-answered': {
      ...base, state: 'answered', request: 'input', procedure: 'survey', name: 'Favourite colour?',
      message: 'Favourite colour?', answer: 'Blue sky', answer_text: 'Answered "Blue sky"', index: 1
    },
    'review-recorded': {
      ...base, state: 'recorded', request: 'review', procedure: 'doc', name: 'Review the draft',
      message: 'Review the draft', answer: { decision: 'Approve', feedback: 'Looks good' },
      answer_text: 'Reviewed: Approve', index: 2
    },
    'escalate-answered': {
      ...base, state: 'answered', request: 'escalate', procedure: 'ops', name: 'Disk full',
      message: 'Disk full', context: { host: 'db-1', severity: 'high' }, answer: true, answer_text: 'Resolved', index: 0
    },
    'approve-timed-out': {
      ...base, state: 'timed_out', request: 'approve', procedure: 'ship', name: 'Quick?', message: 'Quick?',
      answer: false, answer_text: 'Timed out; used the default (false)', index: 3
    },
    'input-stopped': {
      ...base, state: 'stopped', request: 'input', procedure: 'survey', name: 'Name?', message: 'Name?',
      answer: null, answer_text: 'No longer waiting (stopped)', index: null
    }
  };
  const slugs = Object.keys(cards);
  const name = 'states.ipynb';
  fs.writeFileSync(
    path.join(process.env.TACTUS_E2E_ROOT!, name),
    notebook(slugs.map(slug => ({ source: `-- ${slug}`, outputs: [answeredCard(cards[slug])] })))
  );
  await open(page, name);
  const drawn = (i: number) => cell(page, i).locator('.jp-TactusCard');
  await expect(page.locator('.jp-TactusCard')).toHaveCount(slugs.length);
  await expect(page.locator('.tactus-html-fallback')).toHaveCount(0);
  const marks = ['jp-mod-rejected', 'jp-mod-approved', 'jp-mod-approved', 'jp-mod-approved', 'jp-mod-timed-out', 'jp-mod-stopped'];
  const titles = ['Approval', 'Input', 'Review', 'Escalation', 'Approval', 'Input'];
  const tags = [null, null, 'recorded', null, 'timed out', 'stopped'];
  for (let i = 0; i < slugs.length; i++) {
    await expect(drawn(i).locator('.jp-TactusCard-title')).toHaveText(titles[i]);
    await expect(drawn(i).locator('.jp-TactusCard-answer')).toHaveClass(new RegExp(marks[i]));
    await expect(drawn(i).locator('.jp-TactusCard-time')).toHaveText('at 09:05:07 UTC');
    await expect(drawn(i).locator('.jp-TactusCard-tag')).toHaveCount(tags[i] ? 1 : 0);
    if (tags[i]) {
      await expect(drawn(i).locator('.jp-TactusCard-tag')).toHaveText(tags[i]!);
    }
  }
  await expect(drawn(0).locator('.jp-TactusCard-answer')).toHaveText('Rejected');
  await expect(drawn(3).locator('.jp-TactusCard-context tr')).toHaveText(['hostdb-1', 'severityhigh']);
  for (const theme of THEMES) {
    await setTheme(page, theme);
    for (let i = 0; i < slugs.length; i++) {
      for (const part of ['.jp-TactusCard-message', '.jp-TactusCard-answer', '.jp-TactusCard-time']) {
        expect(await contrast(drawn(i).locator(part)), `${theme}: ${slugs[i]} ${part}`).toBeGreaterThanOrEqual(4.5);
      }
      await drawn(i).screenshot({ path: path.join(ARTIFACTS, `card-${slugs[i]}-${SLUGS[theme]}.png`) });
    }
  }
  await setTheme(page, 'JupyterLab Light');
});
