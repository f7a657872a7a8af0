/**
 * Jobs and search-tree nodes as the editor shows them, built from the server's
 * `stark/jobUpdated` notifications.
 *
 * Pure logic with no `vscode` import, so the labels, the choice of the best node and the
 * "did this job just finish?" decision are unit-tested without an editor. The tree view,
 * the status bar and the notifications are thin renderings of this model.
 */

export const JOB_STATES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** The job id exactly as the server sent it: it goes back verbatim in stark.cancel/applyBest. */
export type JobId = string | number;

/** One node of the search tree (the `tree` entries of `stark/jobUpdated`). */
export interface CandidateNode {
    readonly id: number;
    readonly parent: number | null;
    readonly phase: string; // seed | optimize | debug
    readonly runnable: boolean;
    readonly buggy: boolean;
    readonly speedup: number | null;
    readonly round: number;
    readonly score: number | null;
    /** Where the candidate's code is: `kernelUri` (a file URI) or `code_path` (a path). */
    readonly kernelUri: string | null;
    readonly codePath: string | null;
    /** The server's own verdict that this is the job's best node, when it sends one. */
    readonly best: boolean | null;
    readonly error: string | null;
}

/** A validated `stark/jobUpdated` payload. */
export interface JobUpdate {
    readonly jobId: JobId;
    /** The document the user acted on. */
    readonly uri: string;
    /** optimize | verify | debug (optimize when the server does not say). */
    readonly kind: string;
    /** The reference the candidates are compared with (defaults to `uri`). */
    readonly referenceUri: string;
    readonly error: string | null;
    readonly bestNodeId: number | null;
    /** A debug job whose agent proposed a fix (`stark.applyFix` shows it as a confirmed edit). */
    readonly fixAvailable: boolean;
    readonly state: JobState;
    readonly round: number;
    readonly rounds: number;
    readonly bestSpeedup: number | null;
    /**
     * The server's words for that figure: "best so far 1.84x (search figure)" while the search
     * runs, "best 1.31x vs eager, re-measured" after it (null from an older server).
     */
    readonly bestLabel: string | null;
    /** search | remeasured | unconfirmed | engine (null from an older server). */
    readonly bestSource: string | null;
    /** The server confirmed the best kernel faster (re-measured, beyond noise); null: not said. */
    readonly bestFaster: boolean | null;
    readonly tree: readonly CandidateNode[];
}

export interface Job extends JobUpdate {
    /** Unique in this window, across server restarts (a new server reuses job ids). */
    readonly key: string;
    /** From a server process that has since been restarted: its ids mean nothing to the new one. */
    readonly stale: boolean;
    /** Arrival order of the job's first update, so newer jobs sort first. */
    readonly sequence: number;
}

/** What an update did to a job, for the notifications (which speak only on completion or failure). */
export interface JobChange {
    readonly job: Job;
    readonly previousState: JobState | undefined;
    /** Set when this update moved the job into done or failed while the user was watching. */
    readonly finished: 'done' | 'failed' | undefined;
}

export type NodeIconKind = 'best' | 'buggy' | 'runnable' | 'pending';

const TERMINAL: ReadonlySet<JobState> = new Set<JobState>(['done', 'failed', 'cancelled']);

export function isTerminal(state: JobState): boolean {
    return TERMINAL.has(state);
}

export function isActive(job: Job): boolean {
    return !job.stale && !isTerminal(job.state);
}

export function jobKey(jobId: JobId): string {
    return String(jobId);
}

// ---------------------------------------------------------------------------------------------
// Validation: the payload comes from another process, so a malformed one is rejected with a
// message that names the field, instead of surfacing later as `undefined` in a label.

export class JobUpdateError extends Error {}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field<T>(obj: Json, name: string, check: (v: unknown) => v is T, what: string): T {
    const value = obj[name];
    if (!check(value)) {
        throw new JobUpdateError(`stark/jobUpdated: "${name}" should be ${what}, got ${JSON.stringify(value)}`);
    }
    return value;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isOptionalNumber = (v: unknown): v is number | null | undefined => v === null || v === undefined || isFiniteNumber(v);
const isJobId = (v: unknown): v is JobId => (typeof v === 'string' && v.length > 0) || isFiniteNumber(v);
const isJobState = (v: unknown): v is JobState => typeof v === 'string' && (JOB_STATES as readonly string[]).includes(v);
const isOptionalString = (v: unknown): v is string | null | undefined => v === null || v === undefined || typeof v === 'string';

function parseNode(raw: unknown, index: number): CandidateNode {
    if (!isObject(raw)) {
        throw new JobUpdateError(`stark/jobUpdated: tree[${index}] should be an object`);
    }
    const parent = raw['parent'];
    if (!(parent === null || parent === undefined || isFiniteNumber(parent))) {
        throw new JobUpdateError(`stark/jobUpdated: tree[${index}].parent should be a node id or null`);
    }
    return {
        id: field(raw, 'id', isFiniteNumber, 'a number'),
        parent: parent ?? null,
        phase: field(raw, 'phase', isString, 'a string'),
        runnable: Boolean(raw['runnable']),
        buggy: Boolean(raw['buggy']),
        speedup: field(raw, 'speedup', isOptionalNumber, 'a number or null') ?? null,
        round: field(raw, 'round', isOptionalNumber, 'a number') ?? 0,
        score: field(raw, 'score', isOptionalNumber, 'a number') ?? null,
        kernelUri: field(raw, 'kernelUri', isOptionalString, 'a URI') || null,
        codePath: field(raw, 'code_path', isOptionalString, 'a path') || null,
        best: typeof raw['best'] === 'boolean' ? raw['best'] : null,
        error: field(raw, 'error', isOptionalString, 'a string or null') ?? null,
    };
}

/** Validate a raw `stark/jobUpdated` payload (throws JobUpdateError naming the bad field). */
export function parseJobUpdate(raw: unknown): JobUpdate {
    if (!isObject(raw)) {
        throw new JobUpdateError('stark/jobUpdated: the payload should be an object');
    }
    const tree = raw['tree'] ?? [];
    if (!Array.isArray(tree)) {
        throw new JobUpdateError('stark/jobUpdated: "tree" should be a list of nodes');
    }
    const uri = field(raw, 'uri', isString, 'a URI');
    return {
        jobId: field(raw, 'jobId', isJobId, 'a job id'),
        uri,
        kind: field(raw, 'kind', isOptionalString, 'a job kind') || 'optimize',
        referenceUri: field(raw, 'referenceUri', isOptionalString, 'a URI') || uri,
        error: field(raw, 'error', isOptionalString, 'a string or null') || null,
        bestNodeId: field(raw, 'bestNode', isOptionalNumber, 'a node id or null') ?? null,
        fixAvailable: raw['fixAvailable'] === true,
        state: field(raw, 'state', isJobState, `one of ${JOB_STATES.join(', ')}`),
        round: field(raw, 'round', isOptionalNumber, 'a number') ?? 0,
        rounds: field(raw, 'rounds', isOptionalNumber, 'a number') ?? 0,
        bestSpeedup: field(raw, 'bestSpeedup', isOptionalNumber, 'a number or null') ?? null,
        bestLabel: field(raw, 'bestLabel', isOptionalString, 'a string or null') || null,
        bestSource: field(raw, 'bestSource', isOptionalString, 'a string or null') || null,
        bestFaster: typeof raw['bestFaster'] === 'boolean' ? raw['bestFaster'] : null,
        tree: tree.map(parseNode),
    };
}

// ---------------------------------------------------------------------------------------------
// Presentation helpers.

export function formatSpeedup(speedup: number | null | undefined): string {
    if (speedup === null || speedup === undefined) {
        return '—';
    }
    return speedup >= 100 ? `${speedup.toFixed(0)}x` : `${speedup.toFixed(2)}x`;
}

/** File name of a URI or path, for labels ("file:///w/ref_gelu.py" -> "ref_gelu.py"). */
export function baseName(uriOrPath: string): string {
    const withoutQuery = uriOrPath.replace(/[?#].*$/, '');
    const parts = withoutQuery.split(/[\\/]/);
    const last = parts[parts.length - 1] ?? withoutQuery;
    try {
        return decodeURIComponent(last);
    } catch {
        return last;
    }
}

/** "round 3 · optimize · 1.84x", "round 2 · debug · buggy". */
export function nodeLabel(node: CandidateNode): string {
    const outcome = node.buggy ? 'buggy' : node.runnable ? formatSpeedup(node.speedup) : 'pending';
    return `round ${node.round} · ${node.phase} · ${outcome}`;
}

/**
 * The best node: the server's choice when it names one (it knows about noise and flags),
 * else the fastest correct candidate (ties: the earliest, as the search found it first).
 */
export function bestNode(job: JobUpdate): CandidateNode | undefined {
    const named = job.bestNodeId ?? job.tree.find((n) => n.best === true)?.id;
    if (named !== undefined) {
        const node = job.tree.find((n) => n.id === named);
        if (node !== undefined) {
            return node;
        }
    }
    let best: CandidateNode | undefined;
    for (const node of job.tree) {
        if (!node.runnable || node.buggy || node.speedup === null) {
            continue;
        }
        if (best === undefined || node.speedup > (best.speedup ?? -Infinity)) {
            best = node;
        }
    }
    return best;
}

export function hasCode(node: CandidateNode): boolean {
    return node.kernelUri !== null || node.codePath !== null;
}

export function buggyCount(job: JobUpdate): number {
    return job.tree.filter((n) => n.buggy).length;
}

/** The best speedup the server reported, else the one the tree shows. */
export function jobBestSpeedup(job: JobUpdate): number | null {
    return job.bestSpeedup ?? bestNode(job)?.speedup ?? null;
}

/**
 * Whether the best kernel beats the reference: the server's verdict when it gives one (it
 * re-measures the best kernel after the search and counts only a win beyond the noise), else
 * a speedup above 1.
 */
export function jobIsFaster(job: JobUpdate): boolean {
    if (job.bestFaster !== null) {
        return job.bestFaster;
    }
    const speedup = jobBestSpeedup(job);
    return speedup !== null && speedup > 1;
}

export function jobLabel(job: Job): string {
    return baseName(job.uri);
}

/** "running · round 3/10 · best so far 1.84x (search figure) · 2 buggy". */
export function jobDescription(job: Job): string {
    const state = job.stale ? `${job.state}, server restarted` : job.state;
    const parts: string[] = [job.kind === 'optimize' ? state : `${job.kind} ${state}`];
    if (job.rounds > 0) {
        parts.push(`round ${job.round}/${job.rounds}`);
    }
    const best = jobBestSpeedup(job);
    if (job.bestLabel !== null) {
        parts.push(job.bestLabel);
    } else if (best !== null) {
        parts.push(`best ${formatSpeedup(best)}`);
    }
    const buggy = buggyCount(job);
    if (buggy > 0) {
        parts.push(`${buggy} buggy`);
    }
    return parts.join(' · ');
}

export function jobIconKind(job: Job): JobState {
    return job.state;
}

export function nodeIconKind(job: JobUpdate, node: CandidateNode): NodeIconKind {
    if (node.buggy) {
        return 'buggy';
    }
    if (bestNode(job)?.id === node.id) {
        return 'best';
    }
    return node.runnable ? 'runnable' : 'pending';
}

/** Whether "Apply best" makes sense: a finished job of the live server with a correct candidate. */
export function canApply(job: Job): boolean {
    return !job.stale && job.kind === 'optimize' && job.state === 'done' && bestNode(job) !== undefined;
}

/** Status bar text for the running jobs, or undefined when nothing runs (the item hides). */
export function statusSummary(jobs: readonly Job[]): { text: string; tooltip: string } | undefined {
    const active = jobs.filter(isActive);
    if (active.length === 0) {
        return undefined;
    }
    const running = active.filter((j) => j.state === 'running');
    const queued = active.length - running.length;
    const lead = running[0] ?? active[0]!;
    const best = jobBestSpeedup(lead);
    let text = `$(sync~spin) STARK ${jobLabel(lead)}`;
    if (lead.state === 'queued') {
        text = `$(clock) STARK ${jobLabel(lead)} queued`;
    } else if (lead.rounds > 0) {
        text += ` ${lead.round}/${lead.rounds}`;
    }
    if (best !== null) {
        text += ` · ${formatSpeedup(best)}${lead.bestSource === 'search' ? ' (search figure)' : ''}`;
    }
    const others = active.length - 1;
    if (others > 0) {
        text += ` (+${others})`;
    }
    const lines = active.map((j) => `${jobLabel(j)}: ${jobDescription(j)}`);
    if (queued > 0 && running.length > 0) {
        lines.push(`${queued} queued`);
    }
    lines.push('Click to open the STARK Search view.');
    return { text, tooltip: lines.join('\n') };
}

// ---------------------------------------------------------------------------------------------

export interface Disposable {
    dispose(): void;
}

/** All jobs this window knows about, across server restarts. */
export class JobsModel {
    private readonly entries = new Map<string, Job>();
    private readonly listeners = new Set<(change: JobChange | undefined) => void>();
    private sequence = 0;
    /** Bumped when the server restarts, so a reused job id names a new job. */
    private generation = 0;

    private keyOf(jobId: JobId): string {
        return `${this.generation}:${jobKey(jobId)}`;
    }

    /**
     * Apply one `stark/jobUpdated` payload. `live` is false for the snapshot taken from
     * `stark.jobs` at start-up, which must not pop up "finished" notifications for old jobs.
     */
    update(raw: unknown, live = true): JobChange {
        const update = parseJobUpdate(raw);
        const key = this.keyOf(update.jobId);
        const previous = this.entries.get(key);
        const job: Job = {
            ...update,
            key,
            stale: false,
            sequence: previous?.sequence ?? ++this.sequence,
        };
        this.entries.set(key, job);
        const wasFinished = previous !== undefined && !previous.stale && isTerminal(previous.state);
        const finished =
            live && !wasFinished && (job.state === 'done' || job.state === 'failed') ? job.state : undefined;
        const change: JobChange = { job, previousState: previous?.state, finished };
        this.emit(change);
        return change;
    }

    /** The live server's job with this id. */
    get(jobId: JobId): Job | undefined {
        return this.entries.get(this.keyOf(jobId));
    }

    /** Any job, stale ones included, by its window-unique key (what tree elements carry). */
    byKey(key: string): Job | undefined {
        return this.entries.get(key);
    }

    /** Newest first. */
    jobs(): Job[] {
        return [...this.entries.values()].sort((a, b) => b.sequence - a.sequence);
    }

    activeJobs(): Job[] {
        return this.jobs().filter(isActive);
    }

    jobsForUri(uri: string): Job[] {
        return this.jobs().filter((j) => j.uri === uri);
    }

    /** Children of `parentId` (null: the roots), in id order; orphans count as roots. */
    children(job: JobUpdate, parentId: number | null): CandidateNode[] {
        const ids = new Set(job.tree.map((n) => n.id));
        return job.tree
            .filter((n) =>
                parentId === null ? n.parent === null || !ids.has(n.parent) || n.parent === n.id : n.parent === parentId && n.id !== parentId,
            )
            .sort((a, b) => a.id - b.id);
    }

    /** Ids on the path from a root to the best node, so the view can expand exactly that path. */
    pathToBest(job: JobUpdate): Set<number> {
        const path = new Set<number>();
        const byId = new Map(job.tree.map((n) => [n.id, n]));
        let current = bestNode(job);
        while (current !== undefined && !path.has(current.id)) {
            path.add(current.id);
            current = current.parent === null ? undefined : byId.get(current.parent);
        }
        return path;
    }

    /** The server restarted: its job ids are gone, and a job that was running has stopped. */
    markStale(): void {
        this.generation++;
        let changed = false;
        for (const [key, job] of this.entries) {
            if (!job.stale) {
                const state: JobState = isTerminal(job.state) ? job.state : 'cancelled';
                this.entries.set(key, { ...job, state, stale: true });
                changed = true;
            }
        }
        if (changed) {
            this.emit(undefined);
        }
    }

    /** Forget finished jobs (the "Clear finished jobs" button); running ones stay. */
    clearFinished(): void {
        for (const [key, job] of this.entries) {
            if (!isActive(job)) {
                this.entries.delete(key);
            }
        }
        this.emit(undefined);
    }

    onDidChange(listener: (change: JobChange | undefined) => void): Disposable {
        this.listeners.add(listener);
        return { dispose: () => this.listeners.delete(listener) };
    }

    private emit(change: JobChange | undefined): void {
        for (const listener of [...this.listeners]) {
            listener(change);
        }
    }
}
