import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as vscode from 'vscode';

import { JobsModel } from '../../src/jobsModel';
import { SearchTreeProvider, isSearchElement, type SearchElement } from '../../src/treeView';
import { node, update } from './fixtures';

function icon(item: vscode.TreeItem): string | undefined {
    return (item.iconPath as vscode.ThemeIcon | undefined)?.id;
}

function setUp(): { model: JobsModel; tree: SearchTreeProvider } {
    const model = new JobsModel();
    return { model, tree: new SearchTreeProvider(model) };
}

describe('SearchTreeProvider', () => {
    it('shows jobs at the root and nodes nested by parent', () => {
        const { model, tree } = setUp();
        model.update(update());
        const roots = tree.getChildren();
        assert.deepEqual(roots, [{ kind: 'job', job: '0:job-1' }]);
        const level1 = tree.getChildren(roots[0]);
        assert.deepEqual(level1, [{ kind: 'node', job: '0:job-1', nodeId: 0 }]);
        const level2 = tree.getChildren(level1[0]);
        assert.deepEqual(
            level2.map((e) => (e.kind === 'node' ? e.nodeId : -1)),
            [1, 2],
        );
        assert.deepEqual(tree.getParent(level2[0]!), level1[0]);
        assert.deepEqual(tree.getParent(level1[0]!), roots[0]);
    });

    it('spins for a running job and marks the best and buggy nodes', () => {
        const { model, tree } = setUp();
        model.update(update());
        const job = tree.getTreeItem({ kind: 'job', job: '0:job-1' });
        assert.equal(job.label, 'ref_gelu.py');
        assert.equal(icon(job), 'sync~spin');
        assert.equal(job.description, 'running · round 1/3 · best 1.50x · 1 buggy');
        assert.equal(job.contextValue, 'job.running.hasBest');

        const best = tree.getTreeItem({ kind: 'node', job: '0:job-1', nodeId: 1 });
        assert.equal(best.label, 'round 1 · optimize · 1.50x');
        assert.equal(icon(best), 'star-full');
        assert.equal(best.description, '#1 · best');
        assert.equal(best.contextValue, 'node.best.active');
        assert.equal(best.command?.command, 'stark.openCandidate');
        assert.deepEqual(best.command?.arguments, [{ kind: 'node', job: '0:job-1', nodeId: 1 }]);

        const buggy = tree.getTreeItem({ kind: 'node', job: '0:job-1', nodeId: 2 });
        assert.equal(icon(buggy), 'error');
        assert.match(String((buggy.tooltip as vscode.MarkdownString).value), /boom/);
    });

    it('offers apply only on a finished job, and shows cancelled jobs as such', () => {
        const { model, tree } = setUp();
        model.update(update({ state: 'done' }));
        assert.equal(tree.getTreeItem({ kind: 'job', job: '0:job-1' }).contextValue, 'job.done.hasBest');
        assert.equal(tree.getTreeItem({ kind: 'node', job: '0:job-1', nodeId: 1 }).contextValue, 'node.best.applicable');
        assert.equal(icon(tree.getTreeItem({ kind: 'job', job: '0:job-1' })), 'pass');

        model.update(update({ jobId: 'c', state: 'cancelled' }));
        const cancelled = tree.getTreeItem({ kind: 'job', job: '0:c' });
        assert.equal(icon(cancelled), 'circle-slash');
        assert.equal(cancelled.contextValue, 'job.cancelled.hasBest');

        model.update(update({ jobId: 'f', state: 'failed', error: 'engine exited with status 1: out of memory', tree: [node(0, { buggy: true })] }));
        assert.match((tree.getTreeItem({ kind: 'job', job: '0:f' }).tooltip as vscode.MarkdownString).value, /out of memory/);
        assert.equal(icon(tree.getTreeItem({ kind: 'job', job: '0:f' })), 'error');
        assert.equal(tree.getTreeItem({ kind: 'job', job: '0:f' }).contextValue, 'job.failed');
    });

    it('marks jobs of a restarted server stale, and keeps them apart from its reused job ids', () => {
        const { model, tree } = setUp();
        model.update(update({ state: 'done' }));
        model.markStale();
        assert.equal(tree.getTreeItem({ kind: 'job', job: '0:job-1' }).contextValue, 'job.stale.hasBest');
        assert.equal(tree.getTreeItem({ kind: 'node', job: '0:job-1', nodeId: 1 }).contextValue, 'node.best');
        model.update(update({ state: 'running', uri: 'file:///work/new.py' })); // the new server's job-1
        assert.deepEqual(tree.getChildren(), [
            { kind: 'job', job: '1:job-1' },
            { kind: 'job', job: '0:job-1' },
        ]);
        assert.equal(tree.getTreeItem({ kind: 'job', job: '1:job-1' }).label, 'new.py');
        assert.equal(tree.getTreeItem({ kind: 'job', job: '0:job-1' }).label, 'ref_gelu.py');
    });

    it('expands the path to the best node and collapses the rest', () => {
        const { model, tree } = setUp();
        model.update(
            update({
                tree: [node(0, { speedup: 1 }), node(1, { parent: 0, speedup: 2 }), node(2, { parent: 0, speedup: 1.1 }), node(3, { parent: 2, speedup: 1.2 })],
            }),
        );
        const state = (id: number) => tree.getTreeItem({ kind: 'node', job: '0:job-1', nodeId: id }).collapsibleState;
        assert.equal(state(0), vscode.TreeItemCollapsibleState.Expanded);
        assert.equal(state(2), vscode.TreeItemCollapsibleState.Collapsed);
        assert.equal(state(1), vscode.TreeItemCollapsibleState.None);
    });

    it('refreshes when the model changes', () => {
        const { model, tree } = setUp();
        let fired = 0;
        tree.onDidChangeTreeData(() => fired++);
        model.update(update());
        model.update(update({ state: 'done' }));
        assert.equal(fired, 2);
        tree.dispose();
        model.update(update({ state: 'done' }));
        assert.equal(fired, 2);
    });

    it('copes with elements whose job is gone', () => {
        const { tree } = setUp();
        const element: SearchElement = { kind: 'node', job: '0:nope', nodeId: 1 };
        assert.deepEqual(tree.getChildren(element), []);
        assert.equal(tree.getParent(element), undefined);
        assert.match(tree.getTreeItem(element).label as string, /no longer known/);
    });

    it('recognises its own elements', () => {
        assert.equal(isSearchElement({ kind: 'job', job: '0:a' }), true);
        assert.equal(isSearchElement({ kind: 'node', job: '0:a', nodeId: 2 }), true);
        assert.equal(isSearchElement({ jobId: 'a' }), false);
        assert.equal(isSearchElement({ kind: 'job', jobId: 'a' }), false);
        assert.equal(isSearchElement({ uri: 'file:///x' }), false);
    });
});
