/**
 * Browser end-to-end test: a real JupyterLab (started by global-setup.ts)
 * in Debian's Chromium. Never downloads a browser: CHROMIUM_PATH, default
 * /usr/bin/chromium.
 */
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './ui-tests',
  testMatch: '*.spec.ts',
  timeout: 240_000,
  expect: { timeout: 30_000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  outputDir: './ui-tests/artifacts/test-results',
  globalSetup: './ui-tests/global-setup.ts',
  use: {
    headless: true,
    viewport: { width: 1400, height: 1000 },
    actionTimeout: 30_000,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run'
      ]
    }
  }
});
