import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
    JobUpdateError,
    JobsModel,
    bestNode,
    canApply,
    formatSpeedup,
    jobDescription,
    jobIsFaster,
    nodeIconKind,
    nodeLabel,
    parseJobUpdate,
    statusSummary,
} from '../../src/jobsModel';
import { node, update } from './fixtures';

describe('parseJobUpdate', () => {
    it('reads the documented payload', () => {
        const job = parseJobUpdate(update());
        assert.equal(job.jobId, 'job-1');
        assert.equal(job.state, 'running');
        assert.equal(job.kind, 'optimize');
        assert.equal(job.referenceUri, 'file:///work/ref_gelu.py');
        assert.equal(job.tree.length, 3);
        assert.equal(job.tree[1]!.codePath, '/runs/t/node_1.py');
        assert.equal(job.tree[0]!.parent, null);
    });

    it('reads the server extras: kind, referenceUri, bestNode, kernelUri, best', () => {
        const job = parseJobUpdate(
            update({
                kind: 'debug',
                referenceUri: 'file:///work/ref.py',
                bestNode: 0,
                tree: [{ ...node(0), code_path: undefined, score: undefined, kernelUri: 'file:///runs/k0.py', best: true }],
            }),
        );
        assert.equal(job.kind, 'debug');
        assert.equal(job.referenceUri, 'file:///work/ref.py');
        assert.equal(job.bestNodeId, 0);
        assert.equal(job.tree[0]!.kernelUri, 'file:///runs/k0.py');
        assert.equal(job.tree[0]!.codePath, null);
        assert.equal(job.tree[0]!.score, null);
        assert.equal(job.tree[0]!.best, true);
    });

    const bad: [string, Record<string, unknown>, RegExp][] = [
        ['a missing job id', { jobId: undefined }, /"jobId"/],
        ['an unknown state', { state: 'paused' }, /"state" should be one of queued, running, done, failed, cancelled/],
        ['a tree that is not a list', { tree: { 0: {} } }, /"tree" should be a list/],
        ['a node without id', { tree: [{ phase: 'seed' }] }, /"id" should be a number/],
        ['a non-numeric speedup', { tree: [node(0, { speedup: 'fast' })] }, /"speedup"/],
        ['a bad parent', { tree: [node(1, { parent: 'x' })] }, /tree\[0\]\.parent/],
    ];
    for (const [what, overrides, message] of bad) {
        it(`rejects ${what} with a message naming the field`, () => {
            assert.throws(() => parseJobUpdate(update(overrides)), (error: unknown) => {
                assert.ok(error instanceof JobUpdateError);
                assert.match(error.message, message);
                return true;
            });
        });
    }

    it('rejects a payload that is not an object', () => {
        assert.throws(() => parseJobUpdate([1, 2]), JobUpdateError);
        assert.throws(() => parseJobUpdate(null), JobUpdateError);
    });
});

describe('labels', () => {
    it('labels nodes with round, phase and speedup', () => {
        const job = parseJobUpdate(update());
        assert.equal(nodeLabel(job.tree[1]!), 'round 1 · optimize · 1.50x');
        assert.equal(nodeLabel(job.tree[2]!), 'round 2 · debug · buggy');
        assert.equal(nodeLabel(parseJobUpdate(update({ tree: [node(0, { runnable: false, speedup: null })] })).tree[0]!), 'round 0 · seed · pending');
    });

    it('formats speedups', () => {
        assert.equal(formatSpeedup(1.8432), '1.84x');
        assert.equal(formatSpeedup(123.4), '123x');
        assert.equal(formatSpeedup(null), '—');
    });

    it('describes a job with state, progress, best and buggy count', () => {
        const model = new JobsModel();
        const { job } = model.update(update());
        assert.equal(jobDescription(job), 'running · round 1/3 · best 1.50x · 1 buggy');
        const verify = model.update(update({ jobId: 'v', kind: 'verify', state: 'done', rounds: 0, bestSpeedup: null, tree: [] })).job;
        assert.equal(jobDescription(verify), 'verify done');
    });

    it('uses the server\'s label for the best figure: provisional, then re-measured', () => {
        const model = new JobsModel();
        const running = model.update(update({ bestSpeedup: 1.84, bestSource: 'search', bestLabel: 'best so far 1.84x (search figure)', bestFaster: false })).job;
        assert.equal(jobDescription(running), 'running · round 1/3 · best so far 1.84x (search figure) · 1 buggy');
        assert.equal(jobIsFaster(running), false);
        assert.equal(statusSummary(model.jobs())?.text, '$(sync~spin) STARK ref_gelu.py 1/3 · 1.84x (search figure)');
        const done = model.update(update({ state: 'done', round: 3, bestSpeedup: 1.31, bestSource: 'remeasured', bestLabel: 'best 1.31x vs eager, re-measured', bestFaster: true })).job;
        assert.equal(jobDescription(done), 'done · round 3/3 · best 1.31x vs eager, re-measured · 1 buggy');
        assert.equal(jobIsFaster(done), true);
        const noisy = model.update(update({ state: 'done', bestSpeedup: 1.03, bestFaster: false, bestLabel: 'best 1.03x vs eager, re-measured: within noise' })).job;
        assert.equal(jobIsFaster(noisy), false); // above 1, but the server says within noise
        const older = model.update(update({ jobId: 'old', state: 'done', bestSpeedup: 1.2 })).job;
        assert.equal(jobIsFaster(older), true); // an older server: a speedup above 1
    });
});

describe('best node', () => {
    it('is the fastest correct candidate', () => {
        const job = parseJobUpdate(update());
        assert.equal(bestNode(job)?.id, 1);
        assert.equal(nodeIconKind(job, job.tree[1]!), 'best');
        assert.equal(nodeIconKind(job, job.tree[2]!), 'buggy');
        assert.equal(nodeIconKind(job, job.tree[0]!), 'runnable');
    });

    it('never is a buggy node, however fast it claims to be', () => {
        const job = parseJobUpdate(update({ tree: [node(0, { speedup: 1.2 }), node(1, { buggy: true, speedup: 50 })] }));
        assert.equal(bestNode(job)?.id, 0);
    });

    it("follows the server's choice when it names one", () => {
        const job = parseJobUpdate(update({ bestNode: 0 }));
        assert.equal(bestNode(job)?.id, 0);
        const flagged = parseJobUpdate(update({ tree: [node(0, { speedup: 2, best: false }), node(1, { speedup: 1.2, best: true })] }));
        assert.equal(bestNode(flagged)?.id, 1);
    });

    it('keeps the earliest of equally fast nodes, and is absent without a correct node', () => {
        const tie = parseJobUpdate(update({ tree: [node(0, { speedup: 1.3 }), node(1, { speedup: 1.3 })] }));
        assert.equal(bestNode(tie)?.id, 0);
        const none = parseJobUpdate(update({ tree: [node(0, { buggy: true })] }));
        assert.equal(bestNode(none), undefined);
    });
});

describe('JobsModel', () => {
    it('reports a job finishing exactly once, and only when live', () => {
        const model = new JobsModel();
        assert.equal(model.update(update({ state: 'queued' })).finished, undefined);
        assert.equal(model.update(update({ state: 'running' })).finished, undefined);
        assert.equal(model.update(update({ state: 'done' })).finished, 'done');
        assert.equal(model.update(update({ state: 'done' })).finished, undefined);
        assert.equal(model.update(update({ jobId: 'old', state: 'done' }), false).finished, undefined);
        assert.equal(model.update(update({ jobId: 'f', state: 'failed' })).finished, 'failed');
        assert.equal(model.update(update({ jobId: 'c', state: 'cancelled' })).finished, undefined);
    });

    it('keeps the job id type the server chose (it goes back verbatim)', () => {
        const model = new JobsModel();
        model.update(update({ jobId: 7 }));
        assert.equal(model.get(7)?.jobId, 7);
        assert.equal(model.get('7')?.jobId, 7);
    });

    it('lists the newest job first and notifies listeners', () => {
        const model = new JobsModel();
        let calls = 0;
        const subscription = model.onDidChange(() => calls++);
        model.update(update({ jobId: 'a' }));
        model.update(update({ jobId: 'b' }));
        model.update(update({ jobId: 'a', state: 'done' }));
        assert.deepEqual(
            model.jobs().map((j) => j.jobId),
            ['b', 'a'],
        );
        subscription.dispose();
        model.update(update({ jobId: 'c' }));
        assert.equal(calls, 3);
    });

    it('nests nodes by parent, treating orphans as roots, and finds the path to the best', () => {
        const model = new JobsModel();
        const { job } = model.update(
            update({
                tree: [
                    node(0, { parent: null, speedup: 1.0 }),
                    node(1, { parent: 0, speedup: 1.2 }),
                    node(2, { parent: 1, speedup: 2.0 }),
                    node(3, { parent: 0, speedup: 0.9 }),
                    node(4, { parent: 99, speedup: 0.5 }),
                ],
            }),
        );
        assert.deepEqual(model.children(job, null).map((n) => n.id), [0, 4]);
        assert.deepEqual(model.children(job, 0).map((n) => n.id), [1, 3]);
        assert.deepEqual([...model.pathToBest(job)].sort(), [0, 1, 2]);
    });

    it('marks jobs stale when the server restarts: running ones stop, none can be applied', () => {
        const model = new JobsModel();
        model.update(update({ jobId: 'run' }));
        model.update(update({ jobId: 'fin', state: 'done' }));
        assert.equal(canApply(model.get('fin')!), true);
        const finKey = model.get('fin')!.key;
        model.markStale();
        const run = model.jobs().find((j) => j.jobId === 'run');
        assert.equal(run?.state, 'cancelled');
        assert.equal(run?.stale, true);
        assert.equal(canApply(model.byKey(finKey)!), false);
        assert.equal(model.activeJobs().length, 0);
        assert.equal(model.get('fin'), undefined, 'the new server does not know the old ids');
        // the new server reuses the id for a new job: a separate entry, the old one stays stale
        model.update(update({ jobId: 'fin', state: 'running' }));
        assert.equal(model.get('fin')?.stale, false);
        assert.notEqual(model.get('fin')?.key, finKey);
        assert.equal(model.byKey(finKey)?.stale, true);
        assert.equal(model.jobs().length, 3);
    });

    it('clears finished jobs but keeps running ones', () => {
        const model = new JobsModel();
        model.update(update({ jobId: 'run' }));
        model.update(update({ jobId: 'fin', state: 'failed' }));
        model.clearFinished();
        assert.deepEqual(
            model.jobs().map((j) => j.jobId),
            ['run'],
        );
    });
});

describe('statusSummary', () => {
    it('is hidden when nothing runs', () => {
        const model = new JobsModel();
        model.update(update({ state: 'done' }));
        assert.equal(statusSummary(model.jobs()), undefined);
    });

    it('shows the running job, its round and best speedup, and how many more there are', () => {
        const model = new JobsModel();
        model.update(update({ jobId: 'q', state: 'queued', uri: 'file:///w/other.py' }));
        model.update(update({ round: 2 }));
        const summary = statusSummary(model.jobs());
        assert.equal(summary?.text, '$(sync~spin) STARK ref_gelu.py 2/3 · 1.50x (+1)');
        assert.match(summary?.tooltip ?? '', /other\.py: queued/);
        assert.match(summary?.tooltip ?? '', /1 queued/);
    });

    it('shows a queued job with a clock', () => {
        const model = new JobsModel();
        model.update(update({ state: 'queued', bestSpeedup: null, tree: [] }));
        assert.equal(statusSummary(model.jobs())?.text, '$(clock) STARK ref_gelu.py queued');
    });
});
