/**
 * One status bar item: the running job and its best speedup ("STARK ref.py 3/10 · 1.84x").
 * It hides when nothing runs, and turns into an error marker when the server is down.
 * A click opens the STARK Search view.
 */
import * as vscode from 'vscode';

import { type JobsModel, statusSummary } from './jobsModel';
import { VIEW_ID } from './treeView';

export class JobStatusBar implements vscode.Disposable {
    private readonly item: vscode.StatusBarItem;
    private readonly subscription: { dispose(): void };
    private serverProblem: string | undefined;

    constructor(private readonly model: JobsModel) {
        this.item = vscode.window.createStatusBarItem('stark.status', vscode.StatusBarAlignment.Left, 50);
        this.item.name = 'STARK';
        this.subscription = model.onDidChange(() => this.render());
        this.render();
    }

    /** Show (or clear, with undefined) a server problem; clicking then opens the log. */
    setServerProblem(problem: string | undefined): void {
        this.serverProblem = problem;
        this.render();
    }

    private render(): void {
        if (this.serverProblem !== undefined) {
            this.item.text = '$(error) STARK';
            this.item.tooltip = `${this.serverProblem}\nClick to show the log.`;
            this.item.command = 'stark.showLog';
            this.item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
            this.item.show();
            return;
        }
        this.item.backgroundColor = undefined;
        const summary = statusSummary(this.model.jobs());
        if (summary === undefined) {
            this.item.hide();
            return;
        }
        this.item.text = summary.text;
        this.item.tooltip = summary.tooltip;
        this.item.command = { command: `${VIEW_ID}.focus`, title: 'Open the STARK Search view' };
        this.item.show();
    }

    dispose(): void {
        this.subscription.dispose();
        this.item.dispose();
    }
}
