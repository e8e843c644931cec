/**
 * Start `jupyter lab` on 127.0.0.1 with a fresh temporary root directory, no
 * token and fresh settings, for the browser test. Tests read
 * TACTUS_E2E_URL and TACTUS_E2E_ROOT; the returned function stops the server.
 *
 * JUPYTER (default: `jupyter` on PATH, i.e. the active venv) picks the server.
 * `startJupyter('notebook')` starts Jupyter Notebook 7 the same way (the
 * Notebook 7 spec does, in its own beforeAll).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForServer(url: string, proc: ChildProcess, log: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) {
      throw new Error(`jupyter exited with ${proc.exitCode}:\n${fs.readFileSync(log, 'utf8')}`);
    }
    try {
      const response = await fetch(`${url}api/status`);
      if (response.ok) {
        return;
      }
    } catch {
      // not listening yet
    }
    await new Promise(r => setTimeout(r, 250));
  }
  throw new Error(`jupyter did not answer within ${timeoutMs} ms:\n${fs.readFileSync(log, 'utf8')}`);
}

/** A running Jupyter server of the tests. */
export interface IJupyter {
  url: string;
  root: string;
  log: string;
  stop: () => Promise<void>;
}

/** Start `jupyter lab` or `jupyter notebook` (7) in a fresh temporary directory. */
export async function startJupyter(app: 'lab' | 'notebook'): Promise<IJupyter> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), `tactus-e2e-${app}-`));
  const root = path.join(base, 'root');
  const settings = path.join(base, 'settings');
  fs.mkdirSync(root);
  // No news / update toasts covering the page.
  const notification = path.join(settings, '@jupyterlab', 'apputils-extension');
  fs.mkdirSync(notification, { recursive: true });
  fs.writeFileSync(
    path.join(notification, 'notification.jupyterlab-settings'),
    JSON.stringify({ checkForUpdates: false, fetchNews: 'false' })
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const log = path.join(base, 'jupyter.log');
  const out = fs.openSync(log, 'w');
  const appClass = app === 'lab' ? 'LabApp' : 'JupyterNotebookApp';
  const proc = spawn(
    process.env.JUPYTER || 'jupyter',
    [
      app,
      '--no-browser',
      '--ServerApp.ip=127.0.0.1',
      `--ServerApp.port=${port}`,
      '--ServerApp.port_retries=0',
      '--IdentityProvider.token=',
      '--ServerApp.password=',
      '--ServerApp.disable_check_xsrf=True',
      `--ServerApp.root_dir=${root}`,
      `--${appClass}.expose_app_in_browser=True`,
      '--LabServerApp.open_browser=False',
      '--allow-root'
    ],
    {
      cwd: root,
      detached: true,
      stdio: ['ignore', out, out],
      env: {
        ...process.env,
        JUPYTERLAB_SETTINGS_DIR: settings,
        JUPYTERLAB_WORKSPACES_DIR: path.join(base, 'workspaces'),
        JUPYTER_RUNTIME_DIR: path.join(base, 'runtime')
      }
    }
  );
  await waitForServer(url, proc, log, 90_000);

  const stop = async () => {
    if (proc.exitCode === null && proc.pid) {
      try {
        process.kill(-proc.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const deadline = Date.now() + 10_000;
      while (proc.exitCode === null && Date.now() < deadline) {
        await new Promise(r => setTimeout(r, 100));
      }
      if (proc.exitCode === null) {
        try {
          process.kill(-proc.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    if (!process.env.TACTUS_E2E_KEEP) {
      fs.rmSync(base, { recursive: true, force: true });
    }
  };
  return { url, root, log, stop };
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const lab = await startJupyter('lab');
  process.env.TACTUS_E2E_URL = lab.url;
  process.env.TACTUS_E2E_ROOT = lab.root;
  process.env.TACTUS_E2E_LOG = lab.log;
  return lab.stop;
}
