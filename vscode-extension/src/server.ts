/**
 * The language server process: `<python> -P -m stark_lsp` over stdio, with the interpreter
 * from interpreter.ts. The server restarts when a `stark.*` setting it depends on or the Python
 * environment changes (settingsRestart.ts: debounced, and deferred to the end of running jobs
 * if the user asks), and when the API key (after asking) or workspace trust changes. Setting
 * changes are also pushed to the running server at once (`workspace/didChangeConfiguration`),
 * so jobs started while a restart waits already use them. `stark.trace.server` never restarts:
 * the language client applies it itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as vscode from 'vscode';
import {
    CloseAction,
    type CloseHandlerResult,
    DidChangeConfigurationNotification,
    ErrorAction,
    ExecuteCommandRequest,
    MessageType,
    RevealOutputChannelOn,
    type ShowMessageParams,
    ShowMessageNotification,
    ResponseError,
    LanguageClient,
    type LanguageClientOptions,
    type Middleware,
    type ServerOptions,
    State,
    TransportKind,
} from 'vscode-languageclient/node';

import { SERVER_COMMANDS } from './commands';
import { type Interpreter, firstWorkspaceFolder, pythonApi, resolveInterpreter } from './interpreter';
import { type JobsModel } from './jobsModel';
import { type ApiKeyStore, type RedactingLogChannel } from './secrets';
import { SERVER_ARGS, SERVER_SETTINGS, serverSettings } from './settings';
import { SettingsRestarter } from './settingsRestart';
import { type JobStatusBar } from './statusBar';
import { isTrusted } from './trust';

export const CLIENT_ID = 'stark';
const JOB_UPDATED = 'stark/jobUpdated';
const MAX_CRASHES = 3;
const CRASH_WINDOW_MS = 3 * 60_000;

export interface StarkServerOptions {
    readonly log: RedactingLogChannel;
    readonly apiKeys: ApiKeyStore;
    readonly model: JobsModel;
    readonly statusBar: JobStatusBar;
    readonly middleware: Middleware;
}

export class StarkServer implements vscode.Disposable {
    private client: LanguageClient | undefined;
    private interpreter: Interpreter | undefined;
    /** Serialises start/stop/restart so they never overlap. */
    private queue: Promise<unknown> = Promise.resolve();
    private crashes: number[] = [];
    /** A queued restart that has not begun yet: later requests join it instead of piling up. */
    private pendingRestart: Promise<void> | undefined;
    private fallbackCommands: vscode.Disposable[] = [];
    private readonly disposables: vscode.Disposable[] = [];
    private readonly settingsRestart: SettingsRestarter;
    private disposed = false;

    constructor(private readonly options: StarkServerOptions) {
        this.settingsRestart = new SettingsRestarter({
            model: options.model,
            log: options.log,
            restart: (reason) => this.restart(reason, false), // it asked already, if jobs ran
        });
        this.disposables.push(
            this.settingsRestart,
            vscode.workspace.onDidChangeConfiguration((event) => this.onConfigurationChanged(event)),
            vscode.workspace.onDidGrantWorkspaceTrust(() => void this.restart('the workspace is now trusted', false)),
            options.apiKeys.onDidChange(() => void this.restart('the API key changed', true)),
        );
        void this.watchPythonEnvironment();
    }

    get languageClient(): LanguageClient | undefined {
        return this.client?.isRunning() ? this.client : undefined;
    }

    start(): Promise<void> {
        return this.enqueue(() => this.doStart());
    }

    /** Restart; with `confirm`, ask first when jobs would be cut short. */
    async restart(reason: string, confirm: boolean): Promise<void> {
        const active = this.options.model.activeJobs().length;
        if (confirm && active > 0 && this.client !== undefined) {
            const choice = await vscode.window.showWarningMessage(
                `STARK: ${reason}. Restarting the language server stops ${active} running job${active > 1 ? 's' : ''}.`,
                { modal: true },
                'Restart now',
            );
            if (choice !== 'Restart now') {
                this.options.log.info(`Restart (${reason}) postponed by the user; run "STARK: Restart server" to apply it.`);
                return;
            }
        }
        this.options.log.info(`Restarting the language server: ${reason}.`);
        this.pendingRestart ??= this.enqueue(async () => {
            this.pendingRestart = undefined; // from here on, a new request needs a new restart
            await this.doStop();
            await this.doStart();
        });
        await this.pendingRestart;
    }

    private enqueue<T>(task: () => Promise<T>): Promise<T> {
        const run = this.queue.then(task, task);
        this.queue = run.catch(() => undefined);
        return run;
    }

    private async doStart(): Promise<void> {
        if (this.disposed) {
            return;
        }
        this.settingsRestart.serverStarting(); // what follows reads every current setting
        const { log, statusBar } = this.options;
        this.interpreter = await resolveInterpreter(log);
        if (path.isAbsolute(this.interpreter.command) && !fs.existsSync(this.interpreter.command)) {
            this.serverIsDown(
                `STARK: the Python interpreter ${this.interpreter.command} (from ${this.interpreter.source}) does not exist. ` +
                    'Set stark.interpreter to a Python environment where STARK is installed.',
            );
            this.installFallbackCommands();
            return;
        }
        const apiKey = await this.options.apiKeys.get();
        const folder = firstWorkspaceFolder();
        const serverOptions: ServerOptions = {
            command: this.interpreter.command,
            args: [...SERVER_ARGS],
            transport: TransportKind.stdio,
            options: { cwd: folder?.uri.fsPath, env: { ...process.env, PYTHONUNBUFFERED: '1', PYTHONIOENCODING: 'utf-8' } },
        };
        const clientOptions: LanguageClientOptions = {
            documentSelector: [{ scheme: 'file', language: 'python' }],
            outputChannel: log,
            traceOutputChannel: log,
            // Settings flow as `stark` sections built in settings.ts (whitelisted, plus trust),
            // never the raw configuration; the key rides only in initializationOptions.
            initializationOptions: () => ({
                ...serverSettings((key) => vscode.workspace.getConfiguration('stark', folder).get(key), isTrusted()),
                ...(apiKey ? { apiKey } : {}),
            }),
            middleware: {
                ...this.options.middleware,
                workspace: {
                    configuration: async (params, token, next) => {
                        const result = await next(params, token);
                        if (result instanceof ResponseError) {
                            return result;
                        }
                        const values = result as unknown[];
                        return params.items.map((item, index): unknown =>
                            item.section === 'stark'
                                ? serverSettings(
                                      (key) =>
                                          vscode.workspace
                                              .getConfiguration('stark', item.scopeUri ? vscode.Uri.parse(item.scopeUri) : folder)
                                              .get(key),
                                      isTrusted(),
                                  )
                                : values[index],
                        );
                    },
                },
            },
            // Problems are reported once, by this class, with the log one click away.
            revealOutputChannelOn: RevealOutputChannelOn.Never,
            initializationFailedHandler: (error) => {
                log.error(`Initializing the STARK language server failed: ${error instanceof Error ? error.message : String(error)}`);
                return false;
            },
            errorHandler: {
                error: () => ({ action: ErrorAction.Continue, handled: true }),
                closed: () => this.onServerClosed(),
            },
            markdown: { isTrusted: false, supportHtml: false },
        };
        const client = new LanguageClient(CLIENT_ID, 'STARK', serverOptions, clientOptions);
        client.onNotification(JOB_UPDATED, (params: unknown) => {
            try {
                this.options.model.update(params);
            } catch (error) {
                log.warn(`Ignoring a malformed ${JOB_UPDATED}: ${error instanceof Error ? error.message : String(error)}`);
            }
        });
        // The server announces failures itself; give its errors a way to the details.
        client.onNotification(ShowMessageNotification.type, (params) => void this.showServerMessage(params));
        client.onDidChangeState((event) => {
            if (event.newState === State.Stopped) {
                this.options.model.markStale();
                if (this.client !== client) {
                    this.installFallbackCommands(); // it will not come back by itself
                }
            }
        });
        this.client = client;
        this.disposeFallbackCommands();
        log.info(`Starting the STARK language server: ${this.interpreter.command} ${SERVER_ARGS.join(' ')} (interpreter from ${this.interpreter.source}).`);
        try {
            await client.start();
        } catch (error) {
            const reason = error instanceof Error ? error.message : String(error);
            log.error(`The STARK language server failed to start: ${reason}`);
            this.client = undefined;
            this.serverIsDown(
                `The STARK language server did not start with ${this.interpreter.command} (${this.interpreter.source}). ` +
                    'Set stark.interpreter to a Python environment where STARK is installed (`pip install -e .` in the STARK repository).',
            );
            await client.dispose().catch(() => undefined);
            this.installFallbackCommands();
            return;
        }
        statusBar.setServerProblem(undefined);
        this.crashes = [];
        await this.syncJobs(client);
    }

    private async doStop(): Promise<void> {
        const client = this.client;
        this.client = undefined;
        if (client === undefined) {
            return;
        }
        try {
            await client.stop(10_000);
        } catch (error) {
            this.options.log.warn(`Stopping the language server: ${String(error)}`);
        }
        await client.dispose().catch(() => undefined);
    }

    /** Jobs the server already knows (e.g. after a crash-restart), without "finished" pop-ups. */
    private async syncJobs(client: LanguageClient): Promise<void> {
        try {
            const result: unknown = await client.sendRequest(ExecuteCommandRequest.type, { command: 'stark.jobs', arguments: [{}] });
            const listed: unknown = Array.isArray(result) ? result : (result as { jobs?: unknown } | null)?.jobs;
            const jobs: unknown[] = Array.isArray(listed) ? (listed as unknown[]) : [];
            for (const job of jobs) {
                try {
                    this.options.model.update(job, false);
                } catch (error) {
                    this.options.log.debug(`stark.jobs entry skipped: ${String(error)}`);
                }
            }
        } catch (error) {
            this.options.log.debug(`stark.jobs failed: ${String(error)}`);
        }
    }

    private onServerClosed(): CloseHandlerResult {
        const now = Date.now();
        this.crashes = [...this.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
        if (this.crashes.length <= MAX_CRASHES) {
            this.options.log.warn(`The STARK language server exited unexpectedly; restarting it (${this.crashes.length}/${MAX_CRASHES}).`);
            return { action: CloseAction.Restart, handled: true };
        }
        const message = `The STARK language server crashed ${this.crashes.length} times in 3 minutes and stays stopped. See the log, then run "STARK: Restart server".`;
        this.serverIsDown(message);
        this.client = undefined;
        return { action: CloseAction.DoNotRestart, handled: true };
    }

    private async showServerMessage(params: ShowMessageParams): Promise<void> {
        switch (params.type) {
            case MessageType.Error: {
                const choice = await vscode.window.showErrorMessage(params.message, 'Show log');
                if (choice !== undefined) {
                    this.options.log.show(true);
                }
                return;
            }
            case MessageType.Warning:
                void vscode.window.showWarningMessage(params.message);
                return;
            case MessageType.Info:
                void vscode.window.showInformationMessage(params.message);
                return;
            default:
                this.options.log.info(params.message);
        }
    }

    /** Tell the user once, in words that say what to do, and mark the status bar. */
    private serverIsDown(message: string): void {
        this.options.statusBar.setServerProblem(message);
        void vscode.window.showErrorMessage(message, 'Show log', 'Open settings').then((choice) => {
            if (choice === 'Show log') {
                this.options.log.show(true);
            } else if (choice === 'Open settings') {
                void vscode.commands.executeCommand('workbench.action.openSettings', 'stark.interpreter');
            }
        });
    }

    /**
     * While no server runs, its command ids are not registered and a menu click would fail with
     * "command not found"; stand-ins explain the problem and offer the log and a restart. They
     * are removed before the next start, because the client registers the real ones.
     */
    private installFallbackCommands(): void {
        if (this.disposed) {
            return;
        }
        this.disposeFallbackCommands();
        for (const id of SERVER_COMMANDS) {
            try {
                this.fallbackCommands.push(
                    vscode.commands.registerCommand(id, async () => {
                        const choice = await vscode.window.showErrorMessage(
                            'STARK: the language server is not running, so this command is unavailable.',
                            'Restart server',
                            'Show log',
                        );
                        if (choice === 'Restart server') {
                            await this.restart('requested by the user', false);
                        } else if (choice === 'Show log') {
                            this.options.log.show(true);
                        }
                    }),
                );
            } catch {
                // still registered by a client that is shutting down: nothing to stand in for
            }
        }
    }

    private disposeFallbackCommands(): void {
        for (const d of this.fallbackCommands) {
            d.dispose();
        }
        this.fallbackCommands = [];
    }

    /**
     * Push changed settings to the running server right away, so jobs started while the
     * restart (settingsRestart.ts) waits for running ones already use them.
     */
    private onConfigurationChanged(event: vscode.ConfigurationChangeEvent): void {
        if (!SERVER_SETTINGS.some((key) => event.affectsConfiguration(`stark.${key}`))) {
            return; // e.g. stark.trace.server, which the language client applies itself
        }
        const client = this.languageClient;
        if (client !== undefined) {
            const folder = firstWorkspaceFolder();
            const settings = serverSettings((key) => vscode.workspace.getConfiguration('stark', folder).get(key), isTrusted());
            void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { stark: settings } }).catch((error: unknown) => {
                this.options.log.warn(`Could not send the new settings: ${String(error)}`);
            });
        }
    }

    private async watchPythonEnvironment(): Promise<void> {
        const api = await pythonApi(this.options.log);
        if (api === undefined || this.disposed) {
            return;
        }
        this.disposables.push(
            api.environments.onDidChangeActiveEnvironmentPath(() => {
                const setting = vscode.workspace.getConfiguration('stark', firstWorkspaceFolder()).get<string>('interpreter', '').trim();
                if (setting === '') {
                    this.settingsRestart.request('the Python environment');
                }
            }),
        );
    }

    async dispose(): Promise<void> {
        this.disposed = true;
        this.disposeFallbackCommands();
        for (const d of this.disposables) {
            d.dispose();
        }
        await this.doStop();
    }
}
