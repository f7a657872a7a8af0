/**
 * The "STARK Search" tree: jobs at the root, the search tree's nodes below them, nested by
 * parent as the search grew them. Rendering only; all decisions live in jobsModel.ts.
 */
import * as vscode from 'vscode';

import {
    type CandidateNode,
    type Job,
    type JobsModel,
    type JobState,
    type NodeIconKind,
    bestNode,
    canApply,
    formatSpeedup,
    hasCode,
    isActive,
    jobDescription,
    jobIconKind,
    jobKey,
    jobLabel,
    nodeIconKind,
    nodeLabel,
} from './jobsModel';

export const VIEW_ID = 'stark.searchView';

/**
 * Tree elements are plain keys (the job's window-unique `key`, and a node id), so a command
 * invoked from the view looks the job up afresh instead of acting on a stale copy.
 */
export type SearchElement =
    | { readonly kind: 'job'; readonly job: string }
    | { readonly kind: 'node'; readonly job: string; readonly nodeId: number };

export function isSearchElement(value: unknown): value is SearchElement {
    if (typeof value !== 'object' || value === null) {
        return false;
    }
    const v = value as Record<string, unknown>;
    return (v['kind'] === 'job' || (v['kind'] === 'node' && typeof v['nodeId'] === 'number')) && typeof v['job'] === 'string';
}

const JOB_ICONS: Record<JobState, [string, string | undefined]> = {
    queued: ['clock', undefined],
    running: ['sync~spin', undefined],
    done: ['pass', 'testing.iconPassed'],
    failed: ['error', 'errorForeground'],
    cancelled: ['circle-slash', 'disabledForeground'],
};

const NODE_ICONS: Record<NodeIconKind, [string, string | undefined]> = {
    best: ['star-full', 'charts.yellow'],
    buggy: ['error', 'errorForeground'],
    runnable: ['check', undefined],
    pending: ['circle-outline', undefined],
};

function themeIcon([id, color]: [string, string | undefined]): vscode.ThemeIcon {
    return color === undefined ? new vscode.ThemeIcon(id) : new vscode.ThemeIcon(id, new vscode.ThemeColor(color));
}

/** `viewItem` context keys; package.json's menus match these with regular expressions. */
export function jobContextValue(job: Job): string {
    const state = job.stale ? 'stale' : job.state;
    return `job.${state}${bestNode(job) !== undefined ? '.hasBest' : ''}`;
}

export function nodeContextValue(job: Job, node: CandidateNode): string {
    let value = `node.${nodeIconKind(job, node)}`;
    if (nodeIconKind(job, node) === 'best' && canApply(job)) {
        value += '.applicable';
    }
    if (isActive(job)) {
        value += '.active';
    }
    return value;
}

function truncate(text: string, max: number): string {
    return text.length <= max ? text : `${text.slice(0, max)}…`;
}

export class SearchTreeProvider implements vscode.TreeDataProvider<SearchElement>, vscode.Disposable {
    private readonly changed = new vscode.EventEmitter<SearchElement | undefined>();
    readonly onDidChangeTreeData = this.changed.event;
    private readonly subscription: { dispose(): void };

    constructor(private readonly model: JobsModel) {
        this.subscription = model.onDidChange(() => this.changed.fire(undefined));
    }

    dispose(): void {
        this.subscription.dispose();
        this.changed.dispose();
    }

    getChildren(element?: SearchElement): SearchElement[] {
        if (element === undefined) {
            return this.model.jobs().map((job) => ({ kind: 'job', job: job.key }));
        }
        const job = this.model.byKey(element.job);
        if (job === undefined) {
            return [];
        }
        const parentId = element.kind === 'job' ? null : element.nodeId;
        return this.model.children(job, parentId).map((node) => ({ kind: 'node', job: job.key, nodeId: node.id }));
    }

    getParent(element: SearchElement): SearchElement | undefined {
        if (element.kind === 'job') {
            return undefined;
        }
        const job = this.model.byKey(element.job);
        const node = job?.tree.find((n) => n.id === element.nodeId);
        if (job === undefined || node === undefined) {
            return undefined;
        }
        const parentIsNode = node.parent !== null && node.parent !== node.id && job.tree.some((n) => n.id === node.parent);
        return parentIsNode
            ? { kind: 'node', job: job.key, nodeId: node.parent }
            : { kind: 'job', job: job.key };
    }

    getTreeItem(element: SearchElement): vscode.TreeItem {
        const job = this.model.byKey(element.job);
        if (job === undefined) {
            return new vscode.TreeItem('(job no longer known)');
        }
        if (element.kind === 'job') {
            return this.jobItem(job);
        }
        const node = job.tree.find((n) => n.id === element.nodeId);
        return node === undefined ? new vscode.TreeItem('(node no longer known)') : this.nodeItem(job, node);
    }

    private jobItem(job: Job): vscode.TreeItem {
        const item = new vscode.TreeItem(
            jobLabel(job),
            job.tree.length > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
        );
        item.id = `job:${job.key}`;
        item.description = jobDescription(job);
        item.iconPath = themeIcon(JOB_ICONS[jobIconKind(job)]);
        item.contextValue = jobContextValue(job);
        const tooltip = new vscode.MarkdownString(undefined, true);
        tooltip.appendMarkdown(`**${jobLabel(job)}** · job \`${jobKey(job.jobId)}\`\n\n`);
        tooltip.appendText(jobDescription(job));
        if (job.error) {
            tooltip.appendMarkdown('\n\n');
            tooltip.appendCodeblock(truncate(job.error, 800), 'text');
        }
        if (job.stale) {
            tooltip.appendMarkdown('\n\nThe server was restarted since this job ran: its kernels can still be opened and diffed, not applied.');
        }
        item.tooltip = tooltip;
        return item;
    }

    private nodeItem(job: Job, node: CandidateNode): vscode.TreeItem {
        const hasChildren = job.tree.some((n) => n.parent === node.id && n.id !== node.id);
        const onBestPath = this.model.pathToBest(job).has(node.id);
        const collapsible = !hasChildren
            ? vscode.TreeItemCollapsibleState.None
            : onBestPath
              ? vscode.TreeItemCollapsibleState.Expanded
              : vscode.TreeItemCollapsibleState.Collapsed;
        const item = new vscode.TreeItem(nodeLabel(node), collapsible);
        const kind = nodeIconKind(job, node);
        item.id = `node:${job.key}:${node.id}`;
        item.description = kind === 'best' ? `#${node.id} · best` : `#${node.id}`;
        item.iconPath = themeIcon(NODE_ICONS[kind]);
        item.contextValue = nodeContextValue(job, node);
        const tooltip = new vscode.MarkdownString(undefined, true);
        tooltip.appendMarkdown(`**Node #${node.id}** · ${node.phase} · round ${node.round}\n\n`);
        tooltip.appendText(
            node.buggy
                ? 'Buggy: it failed to compile, crashed or gave wrong results.'
                : node.runnable
                  ? `Speedup ${formatSpeedup(node.speedup)} over the reference` +
                    (node.score !== null ? ` · score ${node.score.toFixed(3)}` : '')
                  : 'Not benchmarked yet.',
        );
        if (node.error) {
            tooltip.appendMarkdown('\n\n');
            tooltip.appendCodeblock(truncate(node.error, 800), 'text');
        }
        item.tooltip = tooltip;
        if (hasCode(node)) {
            const element: SearchElement = { kind: 'node', job: job.key, nodeId: node.id };
            item.command = { command: 'stark.openCandidate', title: 'Open kernel', arguments: [element] };
        }
        return item;
    }
}
