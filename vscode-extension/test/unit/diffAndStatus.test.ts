import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

import * as vscode from 'vscode';

import { CANDIDATE_SCHEME, CandidateContentProvider, resolveCodePath, showCandidateDiff } from '../../src/diff';
import { JobsModel } from '../../src/jobsModel';
import { JobStatusBar } from '../../src/statusBar';
import { StatusBarItem, recorded, window as mockWindow } from '../mocks/vscode';
import { node, update } from './fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stark-diff-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('candidate diffs', () => {
    beforeEach(() => recorded.reset());

    it('finds the code from kernelUri, an absolute code_path, or one relative to the reference', () => {
        const model = new JobsModel();
        const job = model.update(
            update({
                uri: pathToFileURL(path.join(dir, 'ref.py')).toString(),
                tree: [
                    node(0, { code_path: undefined, kernelUri: pathToFileURL(path.join(dir, 'k0.py')).toString() }),
                    node(1, { code_path: '/abs/k1.py' }),
                    node(2, { code_path: 'runs/k2.py' }),
                    node(3, { code_path: null }),
                ],
            }),
        ).job;
        const paths = job.tree.map((n) => resolveCodePath(job, n));
        assert.deepEqual(paths, [path.join(dir, 'k0.py'), '/abs/k1.py', path.join(dir, 'runs', 'k2.py'), undefined]);
    });

    it('diffs the reference (left) against a read-only candidate document (right)', async () => {
        const reference = path.join(dir, 'ref.py');
        const candidate = path.join(dir, 'cand_1.py');
        fs.writeFileSync(reference, 'class Model: ...\n');
        fs.writeFileSync(candidate, 'class ModelNew: ...\n');
        const model = new JobsModel();
        const job = model.update(update({ uri: pathToFileURL(reference).toString(), tree: [node(1, { code_path: candidate, speedup: 1.84 })] })).job;

        await showCandidateDiff(job, job.tree[0]!);
        const call = recorded.executed[0];
        assert.equal(call?.command, 'vscode.diff');
        const [left, right, title] = call.args as [vscode.Uri, vscode.Uri, string];
        assert.equal(left.fsPath, reference);
        assert.equal(right.scheme, CANDIDATE_SCHEME);
        assert.equal(title, 'ref.py ↔ candidate #1 (round 1, optimize, 1.84x)');
        assert.equal(await new CandidateContentProvider().provideTextDocumentContent(right), 'class ModelNew: ...\n');
    });

    it('explains instead of failing when a candidate has no code or its file is gone', async () => {
        const model = new JobsModel();
        const job = model.update(update({ tree: [node(3, { code_path: null, buggy: true })] })).job;
        await showCandidateDiff(job, job.tree[0]!);
        assert.deepEqual(recorded.executed, []);
        assert.match(recorded.messages[0]?.text ?? '', /candidate #3 has no code/);
        const gone = vscode.Uri.from({ scheme: CANDIDATE_SCHEME, path: '/x/gone.py', query: new URLSearchParams({ path: path.join(dir, 'gone.py') }).toString() });
        await assert.rejects(new CandidateContentProvider().provideTextDocumentContent(gone), /cannot read candidate kernel .*gone\.py/);
    });
});

describe('JobStatusBar', () => {
    it('shows the running job, hides when idle, and turns red when the server is down', () => {
        let item: StatusBarItem | undefined;
        const create = mockWindow.createStatusBarItem;
        mockWindow.createStatusBarItem = () => (item = new StatusBarItem());
        const model = new JobsModel();
        const bar = new JobStatusBar(model);
        mockWindow.createStatusBarItem = create;
        assert.equal(item?.visible, false);

        model.update(update({ round: 2 }));
        assert.equal(item?.visible, true);
        assert.equal(item?.text, '$(sync~spin) STARK ref_gelu.py 2/3 · 1.50x');
        assert.deepEqual(item?.command, { command: 'stark.searchView.focus', title: 'Open the STARK Search view' });

        model.update(update({ state: 'done' }));
        assert.equal(item?.visible, false);

        bar.setServerProblem('the server crashed');
        assert.equal(item?.visible, true);
        assert.equal(item?.text, '$(error) STARK');
        assert.equal(item?.command, 'stark.showLog');
        bar.setServerProblem(undefined);
        assert.equal(item?.visible, false);
        bar.dispose();
    });
});
