"""The bottom drawer's Play panel: a game against an AlphaZero or MuZero run, on a board of clickable cells.

The chosen run's network is served by an ``Inferencer`` (a worker process that batches the
search's leaf evaluations) for as long as the run stays chosen and the page lives. The agent's
search runs in a thread, so the page stays live while it thinks; the board refuses clicks
meanwhile, and every refused click (an occupied cell, a full column, after the end) leaves the
board as it was and says why. After each agent move the board shows its move probabilities (a
percentage and a shade per cell, in connect4 per column) and its value of the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nicegui import run, ui

from app.runs import runs_of
from graphcore.core.diagnostics import GraphError
from graphcore.runtime.agent import SERVED, AgentAnswer, GameAgent
from graphcore.runtime.config import read_config
from graphcore.runtime.games import EMPTY, GAMES, Game, GameError, O, State, X, get_game
from graphcore.runtime.serving import InferenceError, Inferencer

if TYPE_CHECKING:
    from app.editor import Editor

POLL_SECONDS = 0.5
MAX_SIMULATIONS = 5000  # a bigger search keeps the board waiting for minutes
BOARD_PX = 220  # the board's height in the drawer (260 px), the column shares' row included
MAX_CELL_PX = 60
SHADE = "37, 99, 235"  # the probabilities' colour (rgb); its opacity is the probability
STONES = {X: ("X", "#1e3a8a"), O: ("O", "#b91c1c"), EMPTY: ("", "inherit")}  # text and colour
SIDES = {X: "x", O: "o"}
WAITING = "opacity-60 cursor-wait"  # the board while a run loads or the agent thinks
FIRST = {"you": "you first", "agent": "agent first"}
OUTCOMES = {"user": "You won.", "agent": "The agent won.", "draw": "A draw."}
NO_RUNS = ("No game runs yet: train alphazero_tictactoe, alphazero_connect4 or muzero_tictactoe (Templates, "
           "then the Training tab with task alphazero or muzero) and play against it here.")


@dataclass(frozen=True)
class GameRun:
    """A self-play run that can be played: its folder, name, task (alphazero, muzero), game, and
    self-play simulations."""

    path: Path
    name: str
    task: str
    game: str
    simulations: int


def game_runs(editor: Editor) -> list[GameRun]:
    """The workspace's AlphaZero and MuZero runs with a checkpoint, most recent first."""
    found = []
    for entry in runs_of(editor):
        if entry.task not in SERVED or not (entry.path / "last.pt").is_file():
            continue
        try:
            config = read_config(entry.path / "config.json")
        except GraphError:
            continue
        if config.game in GAMES:
            found.append(GameRun(entry.path, entry.name, config.task, config.game, config.simulations))
    return found


def plays_columns(game: Game) -> bool:
    """Whether a move is a column (connect4: the stone falls) rather than a cell (tic-tac-toe)."""
    return game.num_moves == game.cols


def move_at(game: Game, cell: int) -> int:
    """The move a click on ``cell`` plays: the cell itself, or its column."""
    return cell % game.cols if plays_columns(game) else cell


class Opponent:
    """A run's network served by an Inferencer, and the agent that searches with it."""

    def __init__(self, chosen: GameRun) -> None:
        self.run, self.game = chosen, get_game(chosen.game)
        model, searched = SERVED[chosen.task](chosen.path, self.game)
        self.inferencer = Inferencer(model)
        self.client = self.inferencer.create_client()
        self.model = searched(self.client)  # what the search calls: the client, or MuZero's model over it

    def answer(self, state: State, simulations: int) -> AgentAnswer:
        """The agent's move in ``state`` after ``simulations`` MCTS simulations (blocks: call it in a thread)."""
        return GameAgent(self.model, self.game, simulations).answer(state)

    def close(self) -> None:
        self.client.close()
        self.inferencer.close()


@dataclass
class Match:
    """One game on the board: the position, the user's side, and the agent's last answer and cell."""

    game: Game
    user: int  # X or O
    state: State
    answer: AgentAnswer | None = None
    agent_cell: int | None = None

    def agent_to_move(self) -> bool:
        return self.state.outcome is None and self.state.to_play != self.user

    def play(self, move: int) -> int:
        """Play ``move`` for the side to move; the cell it filled. GameError, with the game's reason,
        if it cannot be played."""
        before, self.state = self.state.board, self.game.play(self.state, move)
        return next(i for i, (was, now) in enumerate(zip(before, self.state.board, strict=True)) if was != now)

    def outcome(self) -> str | None:
        """Who won (user, agent or draw) once the game is over."""
        if self.state.outcome is None:
            return None
        return {self.user: "user", -self.user: "agent"}.get(self.state.outcome, "draw")


class Cell:
    """One square of the board: its stone, and (tic-tac-toe) the agent's probability of the move."""

    def __init__(self, index: int, size: int, on_click: Any, share: bool) -> None:
        self.size = size
        with ui.element("div").classes("flex flex-col items-center justify-center cursor-pointer select-none") \
                .on("click", lambda: on_click(index)).mark(f"play-cell-{index}") as self.box:
            self.stone = ui.label("").classes("font-bold leading-none").style(f"font-size: {size // 2}px")
            self.share = ui.label("").classes("text-[10px] leading-none").mark(f"play-share-{index}") \
                if share else None
        self.draw(EMPTY, 0.0, False)

    def draw(self, stone: int, probability: float, last: bool) -> None:
        text, colour = STONES[stone]
        self.stone.text = text
        self.stone.style(f"color: {colour}")
        if self.share is not None:
            self.share.text = f"{probability:.0%}" if probability > 0 else ""
        ring = "box-shadow: inset 0 0 0 3px #f59e0b;" if last else ""
        self.box.style(replace=f"width: {self.size}px; height: {self.size}px; border: 1px solid #94a3b8; "
                               f"background-color: rgba({SHADE}, {0.6 * probability:.3f}); {ring}")


class PlayPanel:
    """Play a game against a chosen AlphaZero run: the board, who moves first, the agent's
    simulations, its probabilities and value, and New game."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.runs: dict[str, GameRun] = {}
        self.opponent: Opponent | None = None
        self.match: Match | None = None
        self.cells: list[Cell] = []
        self.column_shares: list[ui.label] = []
        self.thinking = self.loading = self.closed = self.shown = False
        with ui.row().classes("w-full items-start gap-4 no-wrap"):
            with ui.column().classes("gap-1 w-60 shrink-0"):
                self.run_select = ui.select({}, label="game run (alphazero, muzero)", on_change=self._run_chosen) \
                    .props("dense outlined").classes("w-full").mark("play-run").on("focus", self.refresh_runs)
                self.first = ui.toggle(FIRST, value="you", on_change=self.new_game).props("dense no-caps") \
                    .mark("play-first").tooltip("who plays x, the first move; a change starts a new game")
                with ui.row().classes("gap-1 no-wrap items-center"):
                    self.simulations = ui.number("simulations", min=1, max=MAX_SIMULATIONS, precision=0) \
                        .props("dense outlined").classes("w-28").mark("play-simulations") \
                        .tooltip("MCTS simulations per agent move (the run's self-play count to start with)")
                    self.new_button = ui.button("New game", icon="restart_alt", on_click=self.new_game) \
                        .props("dense outline no-caps").mark("play-new")
            self.board = ui.column().classes("gap-0 shrink-0").mark("play-board")
            with ui.column().classes("gap-1 min-w-0"):
                self.status = ui.label(NO_RUNS).classes("text-sm").mark("play-status")
                self.message = ui.label("").classes("text-sm text-red-8").mark("play-message")
                self.value = ui.label("").classes("text-sm").mark("play-value")
        self.timer = ui.timer(POLL_SECONDS, self._poll)
        editor.client.on_delete(self.close)

    # ----------------------------------------------------------------- runs
    def _poll(self) -> None:
        """On opening the Play tab: list the runs again (choosing the newest loads it)."""
        shows = self.editor.drawer_shows("play")
        if shows and not self.shown:
            self.refresh_runs()
        self.shown = shows

    def refresh_runs(self) -> None:
        self.runs = {str(r.path): r for r in game_runs(self.editor)}
        options = {key: f"{r.name} ({r.game})" for key, r in self.runs.items()}
        value = self.run_select.value if self.run_select.value in options else next(iter(options), None)
        self.run_select.set_options(options, value=value)
        if not options:
            self.status.text = NO_RUNS

    async def _run_chosen(self) -> None:
        await self.load(self.runs.get(self.run_select.value or ""))

    async def load(self, chosen: GameRun | None) -> None:
        """Serve ``chosen``'s network (the last one's worker is closed first) and start a game on its board."""
        old, self.opponent, self.match = self.opponent, None, None
        self.message.text = self.value.text = ""
        self._build_board(None)
        if old is not None:
            await run.io_bound(old.close)
        if chosen is None:
            return
        self.status.text = f"Loading {chosen.name}: its network goes to an inference worker…"
        self._busy(loading=True)
        try:
            opponent = await run.io_bound(Opponent, chosen)
        except GraphError as exc:
            self.status.text = f"Cannot play {chosen.name}: {exc}"
            return
        finally:
            self._busy(loading=False)
        if opponent is None or self.closed:  # the server is stopping, or the page went while the worker started
            if opponent is not None:
                opponent.close()
            return
        self.opponent = opponent
        self.simulations.value = chosen.simulations
        self._build_board(opponent.game)
        await self.new_game()

    def close(self) -> None:
        """Stop the run's inference worker (the page is gone)."""
        self.closed = True
        self.timer.cancel()
        if self.opponent is not None:
            self.opponent.close()
            self.opponent = None

    # ----------------------------------------------------------------- the board
    def _build_board(self, game: Game | None) -> None:
        """The board's cells for ``game`` (none without a game)."""
        self.board.clear()
        self.cells, self.column_shares = [], []
        if game is None:
            return
        columns = plays_columns(game)
        size = min(MAX_CELL_PX, BOARD_PX // (game.rows + columns))
        with self.board:
            if columns:  # the agent's probabilities, one per column, over the board
                with ui.row().classes("gap-0 no-wrap"):
                    self.column_shares = [
                        ui.label("").classes("text-[10px] text-center").style(f"width: {size}px")
                        .mark(f"play-share-{c}") for c in range(game.cols)]
            with ui.grid(columns=game.cols).classes("gap-0"):
                self.cells = [Cell(i, size, self.click, share=not columns) for i in range(game.rows * game.cols)]

    def _draw(self) -> None:
        match = self.match
        if match is None:
            return
        shares = [0.0] * match.game.num_moves if match.answer is None else match.answer.probabilities.tolist()
        on_cells = shares if not self.column_shares else [0.0] * match.game.num_moves  # connect4: over the board
        for i, cell in enumerate(self.cells):
            cell.draw(match.state.board[i], on_cells[move_at(match.game, i)], i == match.agent_cell)
        for share, label in zip(shares, self.column_shares, strict=False):
            label.text = f"{share:.0%}" if share > 0 else ""
            label.style(f"background-color: rgba({SHADE}, {0.6 * share:.3f})")
        self._show_status()

    def _show_status(self) -> None:
        match = self.match
        if match is None:
            return
        outcome = match.outcome()
        if outcome is not None:
            self.status.text = f"{OUTCOMES[outcome]} New game plays again."
        elif self.thinking:
            self.status.text = f"The agent ({SIDES[-match.user]}) is thinking…"
        else:
            what = "a column" if plays_columns(match.game) else "a cell"
            self.status.text = f"Your move: you play {SIDES[match.user]}; click {what}."

    def _busy(self, *, loading: bool | None = None, thinking: bool | None = None) -> None:
        """While a run loads or the agent thinks, the controls that would start another game wait."""
        self.loading = self.loading if loading is None else loading
        self.thinking = self.thinking if thinking is None else thinking
        idle = not (self.loading or self.thinking)
        for control in (self.run_select, self.first, self.new_button):
            control.set_enabled(idle)
        if idle:
            self.board.classes(remove=WAITING)
        else:
            self.board.classes(WAITING)

    # ----------------------------------------------------------------- moves
    async def new_game(self) -> None:
        if self.opponent is None or self.thinking:
            return
        game = self.opponent.game
        self.match = Match(game, X if self.first.value == "you" else O, game.initial())
        self.message.text = self.value.text = ""
        self._draw()
        await self._agent_turn()

    async def click(self, cell: int) -> None:
        """The user's click on ``cell``: their move, then the agent's; refused, with why, when it cannot be played."""
        refusal = self._refusal()
        if refusal is not None:
            self.message.text = refusal
            return
        match = self.match
        assert match is not None  # (else a refusal)
        try:
            match.play(move_at(match.game, cell))
        except GameError as exc:
            self.message.text = str(exc)
            return
        match.answer, match.agent_cell = None, None
        self.message.text = self.value.text = ""
        self._draw()
        await self._agent_turn()

    def _refusal(self) -> str | None:
        """Why the board takes no move now (the game itself says why a move is illegal), or None."""
        if self.loading:
            return "The run is still loading."
        if self.match is None:
            return "Choose a game run first."
        if self.thinking:
            return "The agent is thinking: wait for its move."
        if self.match.agent_to_move():
            return "It is the agent's move."
        return None

    async def _agent_turn(self) -> None:
        match, opponent = self.match, self.opponent
        if match is None or opponent is None or not match.agent_to_move():
            return
        simulations = min(MAX_SIMULATIONS, max(1, int(self.simulations.value or opponent.run.simulations)))
        self._busy(thinking=True)
        self._show_status()
        try:
            answer = await run.io_bound(opponent.answer, match.state, simulations)
        except InferenceError as exc:  # the worker is gone (the page closed, or it crashed)
            self.status.text = f"The agent could not move: {exc}"
            return
        finally:
            self._busy(thinking=False)
        if answer is None:  # the server is stopping
            return
        match.agent_cell = match.play(answer.move)
        match.answer = answer
        side = SIDES[-match.user]
        where = f"column {answer.move}" if plays_columns(match.game) else f"cell {answer.move}"
        self.value.text = (f"The agent ({side}) played {where}; its value of the position it moved in: "
                           f"{answer.value:+.2f} (+1 a sure win for {side}, −1 a sure loss)")
        self._draw()
