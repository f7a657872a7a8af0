import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import * as vscode from 'vscode';

import { SERVER_COMMANDS, executeCommandMiddleware, registerClientCommands, serverArguments } from '../../src/commands';
import { JobsModel } from '../../src/jobsModel';
import { recorded, window as mockWindow, workspace as mockWorkspace } from '../mocks/vscode';
import { update } from './fixtures';

const toProtocol = (uri: vscode.Uri) => uri.toString();

describe('serverArguments', () => {
    beforeEach(() => recorded.reset());

    it('passes a server-shaped object through untouched (code lenses, buttons)', async () => {
        const model = new JobsModel();
        assert.deepEqual(await serverArguments('stark.optimize', [{ uri: 'file:///a.py', rounds: 2 }], model, toProtocol), [
            { uri: 'file:///a.py', rounds: 2 },
        ]);
    });

    it('turns a menu Uri into {uri}', async () => {
        const model = new JobsModel();
        const uri = vscode.Uri.file('/w/ref.py');
        assert.deepEqual(await serverArguments('stark.optimize', [uri], model, toProtocol), [{ uri: 'file:///w/ref.py' }]);
        assert.deepEqual(await serverArguments('stark.watch', [uri], model, toProtocol), [{ uri: 'file:///w/ref.py' }]);
    });

    it('uses the active editor from the palette, and explains when there is none', async () => {
        const model = new JobsModel();
        assert.equal(await serverArguments('stark.debug', [], model, toProtocol), undefined);
        assert.match(recorded.messages[0]?.text ?? '', /open a Python file first/);
        mockWindow.activeTextEditor = { document: { uri: vscode.Uri.file('/w/k.py') } };
        assert.deepEqual(await serverArguments('stark.debug', [], model, toProtocol), [{ uri: 'file:///w/k.py' }]);
    });

    it('refuses documents that are not files on disk', async () => {
        const model = new JobsModel();
        assert.equal(await serverArguments('stark.optimize', [vscode.Uri.parse('untitled:Untitled-1')], model, toProtocol), undefined);
        assert.match(recorded.messages[0]?.text ?? '', /files on disk/);
    });

    it('turns tree elements into {jobId}, with the id type the server chose', async () => {
        const model = new JobsModel();
        model.update(update({ jobId: 42, state: 'done' }));
        assert.deepEqual(await serverArguments('stark.applyBest', [{ kind: 'job', job: '0:42' }], model, toProtocol), [{ jobId: 42 }]);
        assert.deepEqual(await serverArguments('stark.cancel', [{ kind: 'node', job: '0:42', nodeId: 1 }], model, toProtocol), [{ jobId: 42 }]);
        assert.deepEqual(await serverArguments('stark.optimize', [{ kind: 'job', job: '0:42' }], model, toProtocol), [{ uri: 'file:///work/ref_gelu.py' }]);
    });

    it('never sends the id of a job from a restarted server (the new one may reuse it)', async () => {
        const model = new JobsModel();
        model.update(update({ jobId: 'job-1', state: 'running' }));
        model.markStale();
        model.update(update({ jobId: 'job-1', state: 'running', uri: 'file:///w/other.py' })); // the new server's job-1
        assert.equal(await serverArguments('stark.cancel', [{ kind: 'job', job: '0:job-1' }], model, toProtocol), undefined);
        assert.match(recorded.messages[0]?.text ?? '', /restarted/);
        assert.deepEqual(await serverArguments('stark.cancel', [{ kind: 'job', job: '1:job-1' }], model, toProtocol), [{ jobId: 'job-1' }]);
    });

    it('cancels the only running job from the palette, and says so when none runs', async () => {
        const model = new JobsModel();
        assert.equal(await serverArguments('stark.cancel', [], model, toProtocol), undefined);
        assert.match(recorded.messages[0]?.text ?? '', /no job is running/);
        model.update(update({ jobId: 'r' }));
        model.update(update({ jobId: 'd', state: 'done' }));
        assert.deepEqual(await serverArguments('stark.cancel', [], model, toProtocol), [{ jobId: 'r' }]);
        assert.deepEqual(await serverArguments('stark.applyBest', [], model, toProtocol), [{ jobId: 'd' }]);
    });
});

describe('executeCommandMiddleware', () => {
    beforeEach(() => recorded.reset());

    it('refuses jobs in an untrusted workspace without asking the server', async () => {
        const model = new JobsModel();
        const sent: unknown[] = [];
        const middleware = executeCommandMiddleware(model, () => undefined);
        mockWorkspace.isTrusted = false;
        const result = await middleware('stark.optimize', [vscode.Uri.file('/w/ref.py')], (command, args) => {
            sent.push([command, args]);
            return Promise.resolve({ jobId: 'x' });
        });
        assert.equal(result, undefined);
        assert.equal(sent.length, 0);
        assert.match(recorded.messages[0]?.text ?? '', /Restricted Mode/);
        // cancelling or applying runs no workspace code, so they stay available
        model.update(update({ jobId: 'r' }));
        await middleware('stark.cancel', [{ kind: 'job', job: '0:r' }], (command, args) => {
            sent.push([command, args]);
            return Promise.resolve<unknown>(null);
        });
        assert.deepEqual(sent, [['stark.cancel', [{ jobId: 'r' }]]]);
    });

    it('shows a server error as a STARK message instead of throwing', async () => {
        const middleware = executeCommandMiddleware(new JobsModel(), () => undefined);
        const result = await middleware('stark.optimize', [{ uri: 'file:///w/x.py' }], () => Promise.reject(new Error('not a task: x.py has no Model class')));
        assert.equal(result, undefined);
        assert.deepEqual(recorded.messages, [{ level: 'error', text: 'STARK: not a task: x.py has no Model class', items: [] }]);
    });
});

describe('client-side commands', () => {
    beforeEach(() => recorded.reset());

    it("never register the server's command ids (the language client owns those)", () => {
        const disposables = registerClientCommands(new JobsModel(), {
            showLog: () => undefined,
            restartServer: () => Promise.resolve(),
            setApiKey: () => Promise.resolve(),
        });
        const ids = [...recorded.commands.keys()];
        assert.ok(ids.includes('stark.showDiff') && ids.includes('stark.setApiKey') && ids.includes('stark.restartServer'));
        for (const id of SERVER_COMMANDS) {
            assert.ok(!ids.includes(id), `${id} registered twice`);
        }
        for (const d of disposables) {
            d.dispose();
        }
    });

    it('Show diff works on any node, a restarted server\'s jobs included, and on a job (its best node)', async () => {
        const model = new JobsModel();
        registerClientCommands(model, { showLog: () => undefined, restartServer: () => Promise.resolve(), setApiKey: () => Promise.resolve() });
        model.update(update({ state: 'done' }));
        model.markStale();
        const showDiff = recorded.commands.get('stark.showDiff')!;
        await showDiff({ kind: 'node', job: '0:job-1', nodeId: 0 });
        await showDiff({ kind: 'job', job: '0:job-1' });
        const titles = recorded.executed.filter((e) => e.command === 'vscode.diff').map((e) => e.args[2]);
        assert.deepEqual(titles, ['ref_gelu.py ↔ candidate #0 (round 0, seed, 1.10x)', 'ref_gelu.py ↔ candidate #1 (round 1, optimize, 1.50x)']);
    });
});
