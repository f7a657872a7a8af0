import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import type * as vscode from 'vscode';

import { resolveInterpreter } from '../../src/interpreter';
import { Uri, recorded, workspace } from '../mocks/vscode';

const warnings: string[] = [];
const log = { warn: (message: string) => warnings.push(message) } as unknown as vscode.LogOutputChannel;

/** A stand-in for ms-python.python whose active environment is `executable`. */
function pythonExtension(executable: string | Error): unknown {
    return {
        isActive: true,
        exports: {
            environments: {
                getActiveEnvironmentPath: () => ({ id: 'env', path: typeof executable === 'string' ? executable : '' }),
                resolveEnvironment: () =>
                    executable instanceof Error ? Promise.reject(executable) : Promise.resolve({ executable: { uri: Uri.file(executable) } }),
            },
        },
    };
}

describe('resolveInterpreter', () => {
    beforeEach(() => {
        recorded.reset();
        warnings.length = 0;
        workspace.workspaceFolders = [{ uri: Uri.file('/w'), name: 'w', index: 0 }];
    });

    it('uses stark.interpreter first, expanded', async () => {
        recorded.settings.set('stark.interpreter', '${workspaceFolder}/.venv/bin/python');
        recorded.extensions.set('ms-python.python', pythonExtension('/envs/other/bin/python'));
        const interpreter = await resolveInterpreter(log);
        assert.equal(interpreter.command, '/w/.venv/bin/python');
        assert.match(interpreter.source, /stark\.interpreter/);
    });

    it("then the Python extension's active environment", async () => {
        recorded.extensions.set('ms-python.python', pythonExtension('/envs/stark/bin/python'));
        const interpreter = await resolveInterpreter(log);
        assert.equal(interpreter.command, '/envs/stark/bin/python');
        assert.match(interpreter.source, /Python extension/);
    });

    it('then python3, when the Python extension is absent or fails', async () => {
        assert.equal((await resolveInterpreter(log)).command, process.platform === 'win32' ? 'python' : 'python3');
        recorded.extensions.set('ms-python.python', pythonExtension(new Error('discovery broke')));
        assert.equal((await resolveInterpreter(log)).command, process.platform === 'win32' ? 'python' : 'python3');
        assert.match(warnings.join('\n'), /discovery broke/);
    });

    it("never runs an untrusted workspace's own environment", async () => {
        workspace.isTrusted = false;
        recorded.extensions.set('ms-python.python', pythonExtension('/w/.venv/bin/python'));
        assert.equal((await resolveInterpreter(log)).command, process.platform === 'win32' ? 'python' : 'python3');
        assert.match(warnings.join('\n'), /untrusted workspace/);
        // an environment outside the workspace is fine
        recorded.extensions.set('ms-python.python', pythonExtension('/envs/stark/bin/python'));
        assert.equal((await resolveInterpreter(log)).command, '/envs/stark/bin/python');
    });
});
