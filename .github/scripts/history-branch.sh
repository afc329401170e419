#!/usr/bin/env bash
# The history branch of the perf workflows (HISTORY_BRANCH, default perf-history): one small file per
# run under history/, written only by the push and nightly jobs of main.
#
#   history-branch.sh checkout            check the branch out into ./history-branch (made, empty, on first use)
#   history-branch.sh confirm [ARGS...]   A/B and bisect the steps `history check` lists to run (suspects)
#                                         (at most MAX_SUSPECTS ranges a run); ARGS go to every A/B's pytest
#   history-branch.sh push                commit what was added and push it (again on a race: files never clash)
set -euo pipefail

branch="${HISTORY_BRANCH:-perf-history}"
dir=history-branch
max_suspects="${MAX_SUSPECTS:-2}"

checkout() {
    if git fetch --quiet origin "$branch" 2>/dev/null; then
        git worktree add --quiet -B "$branch" "$dir" "origin/$branch"
    else
        git worktree add --quiet --detach "$dir"
        git -C "$dir" checkout --quiet --orphan "$branch"
        git -C "$dir" rm -rfq .
    fi
    mkdir -p "$dir/history"
}

confirm() {
    pruned-perf history check "$dir/history" --json steps.json > /dev/null || true
    python - "$max_suspects" > suspects.txt <<'PY'
import json, sys
groups = json.load(open("steps.json"))["groups"]
for group in groups:
    for suspect in group["suspects"][: int(sys.argv[1])]:
        print(suspect["good"], suspect["bad"], group["profile"], ",".join(suspect["points"]))
PY
    while read -r good bad profile points; do
        echo "confirming ${good:0:12}..${bad:0:12} ($points)"
        # exit 1 is a confirmed regression: the history records it, and the check after this fails the job
        pruned-perf bisect "$good" "$bad" --points "$points" --profile "$profile" --history "$dir/history" \
            --out "bisect-${bad:0:12}" -- "$@" || true
    done < suspects.txt
}

push() {
    git -C "$dir" add -A
    if git -C "$dir" diff --cached --quiet; then
        echo "nothing new for the history"
        return
    fi
    git -C "$dir" -c user.name="pruned-perf history" -c user.email="actions@users.noreply.github.com" \
        commit --quiet -m "history: ${EVENT:-run} of ${GITHUB_SHA:-$(git rev-parse HEAD)}"
    for attempt in 1 2 3 4 5; do
        if git -C "$dir" push --quiet origin "HEAD:$branch"; then
            return
        fi
        echo "push raced another job (attempt $attempt): rebasing on it"
        git -C "$dir" pull --quiet --rebase origin "$branch"
    done
    echo "::error::could not push the history branch"
    exit 1
}

case "${1:-}" in
    checkout) checkout ;;
    confirm) shift; confirm "$@" ;;
    push) push ;;
    *) echo "usage: $0 checkout | confirm [PYTEST_ARGS...] | push" >&2; exit 2 ;;
esac
