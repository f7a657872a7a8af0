/**
 * The `stark.*` settings as the server receives them. Pure (no `vscode` import) so the
 * whitelist and the interpreter path expansion are unit-tested.
 *
 * Only the settings this extension declares are forwarded: a workspace's settings file can
 * hold any `stark.*` key, and the server also understands test hooks (such as the engine
 * command line) that must not be settable from a cloned repository.
 */
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * `<python> -P -m stark_lsp`. -P (Python 3.11+, which STARK requires) keeps the working
 * directory, i.e. the workspace folder, off sys.path: a folder that contains a `stark_lsp` or
 * `pygls` directory must not be able to replace the server's code, trusted or not.
 */
export const SERVER_ARGS: readonly string[] = ['-P', '-m', 'stark_lsp'];

/** Declared settings the server reads (dotted names as in package.json, minus `stark.`). */
export const SERVER_SETTINGS = [
    'agent',
    'model',
    'baseUrl',
    'rounds',
    'epsilon',
    'atol',
    'rtol',
    'device',
    'parallel',
    'maxConcurrentJobs',
    'autoRun',
    'watch.globs',
] as const;

/**
 * Settings whose change restarts the server (settingsRestart.ts): every setting it receives,
 * and the interpreter that runs it. A restart is the one way to be sure that all of them apply,
 * including what the server reads only at start-up. Not `trace.server`: vscode-languageclient
 * reads `stark.trace.server` itself on every configuration change and sends `$/setTrace`.
 */
export const RESTART_SETTINGS = [...SERVER_SETTINGS, 'interpreter'] as const;

/**
 * The restart settings a configuration change touches (dotted names, minus `stark.`), from
 * `ConfigurationChangeEvent.affectsConfiguration`. Empty: no restart.
 */
export function changedRestartSettings(affectsConfiguration: (section: string) => boolean): string[] {
    return RESTART_SETTINGS.filter((key) => affectsConfiguration(`stark.${key}`));
}

export interface ServerSettings {
    agent?: unknown;
    model?: unknown;
    baseUrl?: unknown;
    rounds?: unknown;
    epsilon?: unknown;
    atol?: unknown;
    rtol?: unknown;
    device?: unknown;
    parallel?: unknown;
    maxConcurrentJobs?: unknown;
    autoRun?: unknown;
    watch: { globs?: unknown };
    trust: boolean;
}

/**
 * Build the `stark` section for the server from a settings getter (`getConfiguration('stark').get`).
 * `trust` is the workspace trust state; the server refuses to run jobs when it is false.
 */
export function serverSettings(get: (key: string) => unknown, trusted: boolean): ServerSettings {
    const out: ServerSettings = { watch: {}, trust: trusted };
    for (const key of SERVER_SETTINGS) {
        const value = get(key);
        if (value === undefined) {
            continue;
        }
        if (key === 'watch.globs') {
            out.watch.globs = value;
        } else {
            out[key] = value;
        }
    }
    return out;
}

/**
 * Expand `${workspaceFolder}`, `${userHome}` and a leading `~` in `stark.interpreter`, and make
 * a relative path absolute against the workspace folder. A bare command name (`python3.12`)
 * is left for PATH lookup.
 */
export function expandInterpreterPath(value: string, workspaceFolder: string | undefined, home: string = os.homedir()): string {
    let expanded = value.trim();
    if (workspaceFolder !== undefined) {
        expanded = expanded.split('${workspaceFolder}').join(workspaceFolder);
    }
    expanded = expanded.split('${userHome}').join(home);
    if (expanded === '~' || expanded.startsWith('~/') || expanded.startsWith('~\\')) {
        expanded = path.join(home, expanded.slice(1));
    }
    const looksLikePath = expanded.includes('/') || expanded.includes('\\');
    if (looksLikePath && !path.isAbsolute(expanded) && workspaceFolder !== undefined) {
        expanded = path.resolve(workspaceFolder, expanded);
    }
    return expanded;
}

/** The interpreter used when neither the setting nor the Python extension names one. */
export function defaultInterpreter(platform: NodeJS.Platform = process.platform): string {
    return platform === 'win32' ? 'python' : 'python3';
}
