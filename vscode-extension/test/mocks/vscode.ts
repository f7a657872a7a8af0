/**
 * The smallest stand-in for the `vscode` module that the unit-tested files need. It records
 * what the code under test asks of the editor (registered commands, messages shown) so tests
 * can assert on it. Loaded in place of `vscode` by register.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export enum TreeItemCollapsibleState {
    None = 0,
    Collapsed = 1,
    Expanded = 2,
}

export class ThemeColor {
    constructor(public readonly id: string) {}
}

export class ThemeIcon {
    constructor(
        public readonly id: string,
        public readonly color?: ThemeColor,
    ) {}
}

export class MarkdownString {
    value = '';
    constructor(value?: string, public supportThemeIcons = false) {
        this.value = value ?? '';
    }
    appendMarkdown(text: string): this {
        this.value += text;
        return this;
    }
    appendText(text: string): this {
        this.value += text;
        return this;
    }
    appendCodeblock(code: string, language = ''): this {
        this.value += `\n\`\`\`${language}\n${code}\n\`\`\`\n`;
        return this;
    }
}

export interface Command {
    command: string;
    title: string;
    arguments?: unknown[];
}

export class TreeItem {
    id?: string;
    description?: string;
    tooltip?: string | MarkdownString;
    iconPath?: ThemeIcon;
    contextValue?: string;
    command?: Command;
    constructor(
        public label: string,
        public collapsibleState: TreeItemCollapsibleState = TreeItemCollapsibleState.None,
    ) {}
}

export class EventEmitter<T> {
    private listeners: ((value: T) => void)[] = [];
    readonly event = (listener: (value: T) => void) => {
        this.listeners.push(listener);
        return { dispose: () => (this.listeners = this.listeners.filter((l) => l !== listener)) };
    };
    fire(value: T): void {
        for (const listener of this.listeners) {
            listener(value);
        }
    }
    dispose(): void {
        this.listeners = [];
    }
}

export class Uri {
    private constructor(
        public readonly scheme: string,
        public readonly path: string,
        public readonly query: string,
    ) {}
    static parse(value: string): Uri {
        const match = /^([a-z][\w+.-]*):(?:\/\/[^/]*)?([^?#]*)(?:\?([^#]*))?/i.exec(value);
        if (match === null) {
            throw new Error(`mock Uri.parse: not a URI: ${value}`);
        }
        return new Uri(match[1]!, decodeURIComponent(match[2]!), match[3] ?? '');
    }
    static file(fsPath: string): Uri {
        return new Uri('file', path.resolve(fsPath), '');
    }
    static from(parts: { scheme: string; path?: string; query?: string }): Uri {
        return new Uri(parts.scheme, parts.path ?? '', parts.query ?? '');
    }
    get fsPath(): string {
        return this.path;
    }
    toString(): string {
        const authority = this.scheme === 'file' ? '//' : '';
        return `${this.scheme}:${authority}${encodeURI(this.path)}${this.query ? `?${this.query}` : ''}`;
    }
}

/** What the code under test did through the mock, for assertions; `answers` script the user. */
export const recorded = {
    commands: new Map<string, (...args: unknown[]) => unknown>(),
    messages: [] as { level: string; text: string; items: string[] }[],
    executed: [] as { command: string; args: unknown[] }[],
    /**
     * Next answers to message buttons and input boxes (undefined: dismissed; a promise: a
     * notification the user has not answered yet).
     */
    answers: [] as (string | undefined | Promise<string | undefined>)[],
    settings: new Map<string, unknown>(),
    extensions: new Map<string, unknown>(),
    reset(): void {
        this.commands.clear();
        this.messages = [];
        this.executed = [];
        this.answers = [];
        this.settings.clear();
        this.extensions.clear();
        configurationChanged.dispose();
        window.activeTextEditor = undefined;
        workspace.isTrusted = true;
        workspace.workspaceFolders = undefined;
    },
};

const configurationChanged = new EventEmitter<{ affectsConfiguration(section: string): boolean }>();

/** Fire `workspace.onDidChangeConfiguration` as VS Code does when these settings change. */
export function changeSettings(...changed: string[]): void {
    const affects = (section: string) => changed.some((key) => key === section || key.startsWith(`${section}.`) || section.startsWith(`${key}.`));
    configurationChanged.fire({ affectsConfiguration: affects });
}

function message(level: string) {
    return (text: string, ...items: unknown[]): Promise<string | undefined> => {
        recorded.messages.push({ level, text, items: items.filter((i): i is string => typeof i === 'string') });
        return Promise.resolve(recorded.answers.shift());
    };
}

export const window = {
    activeTextEditor: undefined as { document: { uri: Uri } } | undefined,
    showInformationMessage: message('info'),
    showWarningMessage: message('warning'),
    showErrorMessage: message('error'),
    showQuickPick: (): Promise<undefined> => Promise.resolve(undefined),
    showInputBox: (): Promise<string | undefined> => Promise.resolve(recorded.answers.shift()),
    createStatusBarItem: (): StatusBarItem => new StatusBarItem(),
};

export enum StatusBarAlignment {
    Left = 1,
    Right = 2,
}

export class StatusBarItem {
    text = '';
    name?: string;
    tooltip?: string;
    command?: string | Command;
    backgroundColor?: ThemeColor;
    visible = false;
    show(): void {
        this.visible = true;
    }
    hide(): void {
        this.visible = false;
    }
    dispose(): void {
        this.visible = false;
    }
}

export const workspace = {
    isTrusted: true,
    fs: {
        readFile: async (uri: Uri): Promise<Uint8Array> => new Uint8Array(await fs.promises.readFile(uri.fsPath)),
    },
    workspaceFolders: undefined as { uri: Uri; name: string; index: number }[] | undefined,
    onDidChangeConfiguration: configurationChanged.event,
    getConfiguration(section: string) {
        return {
            get<T>(key: string, defaultValue?: T): T | undefined {
                const name = `${section}.${key}`;
                return recorded.settings.has(name) ? (recorded.settings.get(name) as T) : defaultValue;
            },
        };
    },
};

export const extensions = {
    getExtension: (id: string): unknown => recorded.extensions.get(id),
};

export const commands = {
    registerCommand(id: string, handler: (...args: unknown[]) => unknown): { dispose(): void } {
        if (recorded.commands.has(id)) {
            throw new Error(`command '${id}' already exists`);
        }
        recorded.commands.set(id, handler);
        return { dispose: () => recorded.commands.delete(id) };
    },
    executeCommand(command: string, ...args: unknown[]): Promise<undefined> {
        recorded.executed.push({ command, args });
        return Promise.resolve(undefined);
    },
};
