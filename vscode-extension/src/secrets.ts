/**
 * The model API key: kept in VS Code's SecretStorage (the OS keychain), handed to the server
 * in `initializationOptions.apiKey`, and never written to settings or logs.
 *
 * The language client traces the `initialize` request, initialization options included, when
 * `stark.trace.server` is on; `RedactingLogChannel` therefore masks the key (and any
 * `"apiKey": "..."` field) in every line that reaches the output channel.
 */
import * as vscode from 'vscode';

const SECRET_ID = 'stark.apiKey';

export class ApiKeyStore implements vscode.Disposable {
    private readonly changed = new vscode.EventEmitter<void>();
    readonly onDidChange = this.changed.event;
    private readonly subscription: vscode.Disposable;
    /** Every key seen this session, so the log channel can redact synchronously, old keys included. */
    private readonly seen = new Set<string>();

    constructor(private readonly secrets: vscode.SecretStorage) {
        this.subscription = secrets.onDidChange(async (event) => {
            if (event.key === SECRET_ID) {
                this.remember(await secrets.get(SECRET_ID));
                this.changed.fire();
            }
        });
    }

    async get(): Promise<string | undefined> {
        const key = (await this.secrets.get(SECRET_ID)) || undefined;
        this.remember(key);
        return key;
    }

    /** Values to mask in logs. */
    knownSecrets(): string[] {
        return [...this.seen];
    }

    private remember(key: string | undefined): void {
        if (key) {
            this.seen.add(key);
        }
    }

    /** The "STARK: Set API key" command: an empty answer removes the key. */
    async promptAndStore(): Promise<void> {
        const existing = await this.get();
        const value = await vscode.window.showInputBox({
            title: 'STARK: API key for the model endpoint',
            prompt: existing
                ? 'A key is stored. Enter a new one to replace it, or leave empty and press Enter to remove it.'
                : 'Stored in VS Code secret storage (your OS keychain), never in settings. The offline agent needs no key.',
            password: true,
            ignoreFocusOut: true,
            placeHolder: 'sk-…',
            validateInput: (text) => (/\s/.test(text.trim()) ? 'An API key has no spaces.' : undefined),
        });
        if (value === undefined) {
            return; // dismissed
        }
        const key = value.trim();
        if (key === '') {
            if (existing) {
                await this.secrets.delete(SECRET_ID);
                void vscode.window.showInformationMessage('STARK: API key removed. The language server restarts without it.');
            }
            return;
        }
        this.remember(key);
        await this.secrets.store(SECRET_ID, key);
        void vscode.window.showInformationMessage('STARK: API key saved in secret storage. The language server restarts to use it.');
    }

    dispose(): void {
        this.subscription.dispose();
        this.changed.dispose();
    }
}

const API_KEY_FIELD = /("api_?key"\s*:\s*")((?:[^"\\]|\\.)*)(")/gi;

/** Mask secrets in a log line. Exported for tests. */
export function redact(text: string, secrets: readonly string[]): string {
    let out = text.replace(API_KEY_FIELD, (_m, open: string, value: string, close: string) =>
        value === '' ? `${open}${close}` : `${open}***${close}`,
    );
    for (const secret of secrets) {
        if (secret.length >= 4) {
            out = out.split(secret).join('***');
        }
    }
    return out;
}

/** A LogOutputChannel that masks secrets before anything is written. */
export class RedactingLogChannel implements vscode.LogOutputChannel {
    constructor(
        private readonly inner: vscode.LogOutputChannel,
        private readonly secrets: () => readonly string[],
    ) {}

    get name(): string {
        return this.inner.name;
    }
    get logLevel(): vscode.LogLevel {
        return this.inner.logLevel;
    }
    get onDidChangeLogLevel(): vscode.Event<vscode.LogLevel> {
        return this.inner.onDidChangeLogLevel;
    }

    private clean(text: string): string {
        return redact(text, this.secrets());
    }
    private cleanArgs(args: unknown[]): unknown[] {
        return args.map((a) => (typeof a === 'string' ? this.clean(a) : a instanceof Error ? this.clean(a.stack ?? a.message) : a));
    }

    trace(message: string, ...args: unknown[]): void {
        this.inner.trace(this.clean(message), ...this.cleanArgs(args));
    }
    debug(message: string, ...args: unknown[]): void {
        this.inner.debug(this.clean(message), ...this.cleanArgs(args));
    }
    info(message: string, ...args: unknown[]): void {
        this.inner.info(this.clean(message), ...this.cleanArgs(args));
    }
    warn(message: string, ...args: unknown[]): void {
        this.inner.warn(this.clean(message), ...this.cleanArgs(args));
    }
    error(error: string | Error, ...args: unknown[]): void {
        const text = typeof error === 'string' ? error : (error.stack ?? error.message);
        this.inner.error(this.clean(text), ...this.cleanArgs(args));
    }
    append(value: string): void {
        this.inner.append(this.clean(value));
    }
    appendLine(value: string): void {
        this.inner.appendLine(this.clean(value));
    }
    replace(value: string): void {
        this.inner.replace(this.clean(value));
    }
    clear(): void {
        this.inner.clear();
    }
    show(columnOrPreserveFocus?: vscode.ViewColumn | boolean, preserveFocus?: boolean): void {
        if (typeof columnOrPreserveFocus === 'boolean' || columnOrPreserveFocus === undefined) {
            this.inner.show(columnOrPreserveFocus);
        } else {
            this.inner.show(columnOrPreserveFocus, preserveFocus);
        }
    }
    hide(): void {
        this.inner.hide();
    }
    dispose(): void {
        this.inner.dispose();
    }
}
