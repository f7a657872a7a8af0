/** Payloads shaped like the server's `stark/jobUpdated` (both the documented and the richer form). */

export function node(id: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
    return {
        id,
        parent: id === 0 ? null : 0,
        phase: id === 0 ? 'seed' : 'optimize',
        runnable: true,
        buggy: false,
        speedup: 1.0,
        round: id,
        score: 0.5,
        code_path: `/runs/t/node_${id}.py`,
        error: null,
        ...overrides,
    };
}

export function update(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    return {
        jobId: 'job-1',
        uri: 'file:///work/ref_gelu.py',
        state: 'running',
        round: 1,
        rounds: 3,
        bestSpeedup: 1.5,
        tree: [node(0, { speedup: 1.1 }), node(1, { speedup: 1.5 }), node(2, { buggy: true, runnable: false, speedup: null, phase: 'debug', error: 'boom' })],
        ...overrides,
    };
}
