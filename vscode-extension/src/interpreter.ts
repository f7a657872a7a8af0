/**
 * Which Python runs the language server: the `stark.interpreter` setting, else the Python
 * extension's active environment (that extension is optional), else `python3`. In an
 * untrusted workspace, an environment that lives inside the workspace is not used: its
 * binaries are the workspace's code too.
 */
import * as path from 'node:path';

import { PythonExtension } from '@vscode/python-extension';
import * as vscode from 'vscode';

import { defaultInterpreter, expandInterpreterPath } from './settings';
import { isTrusted } from './trust';

export interface Interpreter {
    readonly command: string;
    readonly source: string;
}

export function firstWorkspaceFolder(): vscode.WorkspaceFolder | undefined {
    return vscode.workspace.workspaceFolders?.[0];
}

/** The Python extension's API, or undefined when it is absent or broken (it is optional). */
export async function pythonApi(log: vscode.LogOutputChannel): Promise<PythonExtension | undefined> {
    if (vscode.extensions.getExtension('ms-python.python') === undefined) {
        return undefined;
    }
    try {
        return await PythonExtension.api();
    } catch (error) {
        log.warn(`Python extension API unavailable: ${String(error)}`);
        return undefined;
    }
}

export function insideWorkspace(file: string): boolean {
    const resolved = path.resolve(file);
    return (vscode.workspace.workspaceFolders ?? []).some((folder) => {
        const relative = path.relative(folder.uri.fsPath, resolved);
        return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
    });
}

export async function resolveInterpreter(log: vscode.LogOutputChannel): Promise<Interpreter> {
    const folder = firstWorkspaceFolder();
    const setting = vscode.workspace.getConfiguration('stark', folder).get<string>('interpreter', '').trim();
    if (setting !== '') {
        return { command: expandInterpreterPath(setting, folder?.uri.fsPath), source: 'the stark.interpreter setting' };
    }
    const api = await pythonApi(log);
    if (api !== undefined) {
        try {
            const envPath = api.environments.getActiveEnvironmentPath(folder?.uri);
            const env = await api.environments.resolveEnvironment(envPath);
            const executable = env?.executable.uri?.fsPath;
            if (executable && !isTrusted() && insideWorkspace(executable)) {
                // A virtual environment shipped inside an untrusted folder is its code too.
                log.warn(`Not running ${executable} from the untrusted workspace; using ${defaultInterpreter()} until it is trusted.`);
            } else if (executable) {
                return { command: executable, source: "the Python extension's active environment" };
            }
        } catch (error) {
            log.warn(`Could not read the Python extension's active environment: ${String(error)}`);
        }
    }
    return { command: defaultInterpreter(), source: 'the default (no stark.interpreter, no Python extension environment)' };
}
