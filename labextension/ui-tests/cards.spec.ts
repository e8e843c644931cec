/**
 * The human-request cards as a person uses them, in a real JupyterLab and a
 * real Chromium: typing key by key into input and review cards, Enter,
 * Approve and Reject, the status bar while a card waits, the static card
 * an answer leaves (after a save, a kernel restart and a reopen from disk),
 * and the light and dark themes. Nothing here sends comm messages itself.
 *
 * Screenshots of each card kind go to ui-tests/artifacts/cards/; with
 * TACTUS_UPDATE_SCREENSHOTS=1 also to docs/images/ (the README shows them).
 */
import { expect, Locator, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

import { cell, command, executionDone, kernelReady, notebook, open, output, readNotebook, restartKernel, runCell, save } from './helpers';

const ARTIFACTS = path.join(__dirname, 'artifacts', 'cards');
const DOCS_IMAGES = path.join(__dirname, '..', '..', 'docs', 'images');
const MIME = 'application/vnd.tactus.card+json';

// ------------------------------------------------------------ card helpers
/** The cell's result (its execute_result). */
function result(page: Page, index: number): Locator {
  return output(page, index).locator('.jp-OutputArea-executeResult');
}

/** The live (widget) card a cell shows while it waits. */
function liveCard(page: Page, index: number): Locator {
  return output(page, index).locator('.jupyter-widgets.tactus-card');
}

/** The static card an answered (or replayed, or timed-out) request leaves,
 * as JupyterLab draws it (the extension's renderer of the card's JSON). */
function staticCard(page: Page, index: number): Locator {
  return output(page, index).locator('.jp-TactusCard');
}

/** "Approved", then the time it was given, as the drawn card reads. */
function answeredAt(answer: string): RegExp {
  return new RegExp(`${answer}\\s*at \\d\\d:\\d\\d:\\d\\d UTC`);
}

async function theme(page: Page, name: 'JupyterLab Light' | 'JupyterLab Dark'): Promise<void> {
  await command(page, 'apputils:change-theme', { theme: name });
  const light = name === 'JupyterLab Light' ? 'true' : 'false';
  await page.waitForFunction(l => document.body.dataset.jpThemeLight === l, light);
}

/** One screenshot of one card, cropped to it; into docs/images on request. */
async function shot(card: Locator, name: string): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await card.scrollIntoViewIfNeeded();
  await card.screenshot({ path: file, animations: 'disabled' });
  if (process.env.TACTUS_UPDATE_SCREENSHOTS === '1') {
    fs.mkdirSync(DOCS_IMAGES, { recursive: true });
    fs.copyFileSync(file, path.join(DOCS_IMAGES, `card-${name}.png`));
  }
}

/** The kernel status JupyterLab holds, and what its status bar shows. */
async function kernelStatus(page: Page): Promise<string> {
  return page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.status);
}

function humanEntry(nb: any, key: string): any {
  return nb.metadata.tactus.procedures[key].checkpoints.find((c: any) => c.kind === 'human');
}

function savedCards(nb: any, index: number): any[] {
  return nb.cells[index].outputs.filter((o: any) => o.data && o.data[MIME]).map((o: any) => o.data[MIME]);
}

// ---------------------------------------------------------------- sources
const COLOUR = `procedure({name = "colour"}, function()
  return {colour = Human.input({message = "Favourite colour?", context = {asked_by = "Ada"}})}
end)`;

const DRAFT = `procedure({name = "draft"}, function()
  local r = Human.review({message = "Check the draft", artifact = "Hello wrld", artifact_type = "text"})
  return {decision = r.decision, feedback = r.feedback, artifact = r.edited_artifact}
end)`;

const GREET = `procedure({name = "greet"}, function()
  return {name = Human.input({message = "Your name?", placeholder = "Grace"})}
end)`;

const SHIP = `procedure({name = "ship"}, function()
  return {ok = Human.approve({message = "Deploy v2 to prod?", context = {version = "2.0", env = "prod"}})}
end)`;

const DROP = `procedure({name = "drop"}, function()
  return {ok = Human.approve({message = "Drop the old tables?", context = {tables = 12}})}
end)`;

const PAGE = `procedure({name = "page"}, function()
  Human.escalate({message = "The database is down", severity = "high", context = {db = "main", since = "03:10"}})
  return {resolved = true}
end)`;

const NOTIFY = `Human.notify({message = "Nightly build started", level = "info", context = {build = 1042}})
System.alert({message = "Disk 91% full", level = "warning", source = "monitor"})`;

const QUICK = `procedure({name = "quick"}, function()
  local ok, timed_out = Human.approve({message = "Quick: go ahead?", timeout = 2, default = false})
  return {ok = ok, timed_out = timed_out}
end)`;

test.beforeAll(() => {
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
});

test('typed answers reach the kernel whole, Enter submits, the status bar says Busy while a card waits', async ({
  page
}) => {
  const name = 'cards-typing.ipynb';
  const file = path.join(process.env.TACTUS_E2E_ROOT!, name);
  fs.writeFileSync(file, notebook([COLOUR, DRAFT, GREET]));
  await open(page, name);
  await kernelReady(page);

  // 1. An input card, typed into key by key.
  await runCell(page, 0);
  const input = liveCard(page, 0);
  await expect(input).toContainText('Favourite colour?');
  await expect(input).toContainText(/Waiting for an answer since \d\d:\d\d:\d\d UTC/);
  const box = input.locator('input.widget-input');
  await box.click();
  await page.keyboard.type('Blue sky', { delay: 80 });
  // the cell still runs while its card waits: the kernel is busy, and says so
  await expect.poll(() => kernelStatus(page)).toBe('busy');
  await expect(page.locator('#jp-main-statusbar')).toContainText(/Busy/);
  await input.getByRole('button', { name: 'Submit' }).click();
  await executionDone(page, 0);
  await expect(result(page, 0)).toContainText('"Blue sky"');
  const colour = staticCard(page, 0);
  await expect(colour).toContainText('Favourite colour?');
  await expect(colour).toContainText('asked_by');
  await expect(colour).toContainText(answeredAt('Answered "Blue sky"'));
  await expect(liveCard(page, 0)).toHaveCount(0);
  await expect.poll(() => kernelStatus(page)).toBe('idle');

  // 2. A review card: feedback typed, the artifact edited.
  await runCell(page, 1);
  const review = liveCard(page, 1);
  await expect(review).toContainText('Check the draft');
  await review.getByPlaceholder('Feedback (optional)').click();
  await page.keyboard.type('Looks good', { delay: 80 });
  const artifact = review.locator('textarea').first();
  await artifact.click();
  await page.keyboard.press('End');
  for (let i = 0; i < 3; i++) {
    await page.keyboard.press('ArrowLeft');
  }
  await page.keyboard.type('o', { delay: 80 }); // "Hello w|rld" -> "Hello world"
  await expect(artifact).toHaveValue('Hello world');
  await review.getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 1);
  await expect(result(page, 1)).toContainText('"Looks good"');
  await expect(result(page, 1)).toContainText('"Hello world"');
  await expect(staticCard(page, 1)).toContainText('Feedback: Looks good');
  await expect(staticCard(page, 1).locator('.jp-TactusCard-answer')).toHaveText('Reviewed: Approve');

  // 3. Enter in a one-line input submits.
  await runCell(page, 2);
  const greet = liveCard(page, 2);
  await greet.locator('input.widget-input').click();
  await page.keyboard.type('Grace Hopper', { delay: 80 });
  await page.keyboard.press('Enter');
  await executionDone(page, 2);
  await expect(result(page, 2)).toContainText('"Grace Hopper"');
  await expect(staticCard(page, 2)).toContainText(/Answered "Grace Hopper"/);

  // 4. The saved notebook holds the whole text, in the record and in the static cards.
  await save(page);
  let nb: any;
  await expect
    .poll(() => {
      nb = readNotebook(file);
      return Boolean(nb.metadata.tactus?.procedures?.greet);
    })
    .toBe(true);
  expect(humanEntry(nb, 'colour').value).toBe('Blue sky');
  const drafted = humanEntry(nb, 'draft').value;
  expect(drafted).toMatchObject({ decision: 'Approve', feedback: 'Looks good', edited_artifact: 'Hello world' });
  expect(humanEntry(nb, 'greet').value).toBe('Grace Hopper');
  expect(savedCards(nb, 0)).toEqual([
    expect.objectContaining({ state: 'answered', request: 'input', procedure: 'colour', answer: 'Blue sky', index: 0 })
  ]);
  expect(savedCards(nb, 1)[0].answer).toMatchObject({ feedback: 'Looks good', edited_artifact: 'Hello world' });
  // no live card is left in the file (only the cards' static forms)
  const liveCards = nb.cells
    .flatMap((c: any) => c.outputs)
    .filter((o: any) => o.data?.['application/vnd.jupyter.widget-view+json'] && /^\[Tactus\]/.test(o.data['text/plain']));
  expect(liveCards).toEqual([]);
});

/** Run the card cells once: screenshots of each kind in the current theme. */
async function everyCardKind(page: Page, suffix: string): Promise<void> {
  // 0: %tactus reset, so every card asks afresh
  await runCell(page, 0);
  await executionDone(page, 0);

  await runCell(page, 1);
  const ship = liveCard(page, 1);
  await expect(ship).toContainText('Deploy v2 to prod?');
  await shot(ship, `approve-${suffix}`);
  await ship.getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 1);
  await expect(staticCard(page, 1)).toContainText(answeredAt('Approved'));
  await shot(staticCard(page, 1), `answered-${suffix}`);

  await runCell(page, 2);
  await liveCard(page, 2).getByRole('button', { name: 'Reject' }).click();
  await executionDone(page, 2);
  await expect(staticCard(page, 2)).toContainText(answeredAt('Rejected'));
  await shot(staticCard(page, 2), `rejected-${suffix}`);

  await runCell(page, 3);
  const escalation = liveCard(page, 3);
  await expect(escalation).toContainText('The database is down');
  await shot(escalation, `escalate-${suffix}`);
  await escalation.getByRole('button', { name: 'Resolve' }).click();
  await executionDone(page, 3);

  await runCell(page, 4);
  await executionDone(page, 4);
  await expect(output(page, 4).locator('div.tactus-card')).toHaveCount(2);
  await shot(output(page, 4).locator('div.tactus-card').first(), `notice-${suffix}`);

  await runCell(page, 5);
  await executionDone(page, 5);
  await expect(staticCard(page, 5)).toContainText(answeredAt('Timed out; returned the default false'));
  await shot(staticCard(page, 5), `timed-out-${suffix}`);

  await runCell(page, 6);
  const input = liveCard(page, 6);
  await input.locator('input.widget-input').click();
  await page.keyboard.type('Blue sky', { delay: 40 });
  await shot(input, `input-${suffix}`);
  await page.keyboard.press('Enter');
  await executionDone(page, 6);

  await runCell(page, 7);
  const review = liveCard(page, 7);
  await review.getByPlaceholder('Feedback (optional)').click();
  await page.keyboard.type('Looks good', { delay: 40 });
  await shot(review, `review-${suffix}`);
  await review.getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 7);
  await shot(staticCard(page, 7), `reviewed-${suffix}`);
}

test('Approve and Reject read apart; every card kind in the light and the dark theme', async ({ page }) => {
  const name = 'cards-kinds.ipynb';
  fs.writeFileSync(path.join(process.env.TACTUS_E2E_ROOT!, name), notebook(['%tactus reset', SHIP, DROP, PAGE, NOTIFY, QUICK, COLOUR, DRAFT]));
  await open(page, name);
  await kernelReady(page);
  await theme(page, 'JupyterLab Light');
  await everyCardKind(page, 'light');

  // Rejected is not the green of Approved: its mark takes the theme's error colour.
  const colourOf = (l: Locator) =>
    l.locator('.jp-TactusCard-answer').evaluate(e => getComputedStyle(e, '::before').color);
  const approved = await colourOf(staticCard(page, 1));
  const rejected = await colourOf(staticCard(page, 2));
  expect(rejected).not.toEqual(approved);
  const errorColour = await page.evaluate(() => {
    const probe = document.createElement('span');
    probe.style.color = 'var(--jp-error-color1)';
    document.body.appendChild(probe);
    const c = getComputedStyle(probe).color;
    probe.remove();
    return c;
  });
  expect(rejected).toEqual(errorColour);
  await expect(staticCard(page, 2).locator('.jp-TactusCard-answer')).toHaveText('Rejected');
  await expect(staticCard(page, 2).locator('.jp-TactusCard-answer')).toHaveClass(/jp-mod-rejected/);
  await expect(staticCard(page, 1).locator('.jp-TactusCard-answer')).toHaveText('Approved');
  await expect(staticCard(page, 1).locator('.jp-TactusCard-answer')).toHaveClass(/jp-mod-approved/);

  await theme(page, 'JupyterLab Dark');
  await everyCardKind(page, 'dark');
  // Text on the dark theme is light: the card takes the theme's colours.
  const text = await staticCard(page, 1)
    .locator('.jp-TactusCard-message')
    .evaluate(e => getComputedStyle(e).color);
  const [r, g, b] = text.match(/\d+/g)!.map(Number);
  expect(r + g + b).toBeGreaterThan(3 * 150);
  await theme(page, 'JupyterLab Light');
});

test('an answered card stays readable after a save, a kernel restart and a reopen from disk', async ({ page }) => {
  const name = 'cards-restart.ipynb';
  const file = path.join(process.env.TACTUS_E2E_ROOT!, name);
  fs.writeFileSync(file, notebook([SHIP]));
  await open(page, name);
  await kernelReady(page);
  await runCell(page, 0);
  await liveCard(page, 0).getByRole('button', { name: 'Approve' }).click();
  await executionDone(page, 0);
  await expect(staticCard(page, 0)).toContainText(answeredAt('Approved'));
  await save(page);

  const check = async (label: string) => {
    const card = staticCard(page, 0);
    await expect(card).toContainText('Deploy v2 to prod?');
    await expect(card).toContainText('env');
    await expect(card).toContainText(answeredAt('Approved'));
    // no card widget left to break: no widget view of a card, no "model not found" placeholder
    await expect(output(page, 0).locator('.jupyter-widgets.tactus-card')).toHaveCount(0);
    await expect(card.locator('.jupyter-widgets')).toHaveCount(0);
    await expect(card).not.toContainText(/Error displaying widget|model not found/i);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await cell(page, 0).screenshot({ path: path.join(ARTIFACTS, `${label}.png`) });
  };
  await check('after-save');

  await restartKernel(page);
  await check('after-restart');

  // Close the tab and open the notebook again from disk.
  await command(page, 'application:close-all');
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(0);
  await command(page, 'docmanager:open', { path: name });
  await expect(cell(page, 0)).toBeVisible({ timeout: 60_000 });
  await kernelReady(page);
  await check('after-reopen');
  const [saved] = savedCards(readNotebook(file), 0);
  expect(saved).toMatchObject({ version: 1, state: 'answered', request: 'approve', procedure: 'ship', answer: true });
  expect(saved.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});
