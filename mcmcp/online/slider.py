"""The browser's GSP slider trial on the server: what the page is told, and its answer checked.

The page shows one face, a track and a handle; it knows slider positions only (0 at the left
end, K - 1 at the right), never circle points: the server maps the confirmed position to its
circle point with the trial's `shift` (`mcmcp.sampling.gsp.slider_to_point`), as the lab's
PsychoPy slider does. The handle's path comes with the answer, checked and bounded here, and is
saved with the trial's row (exported as `slider_moves.csv` beside `trials.csv`). Nothing the page
sends is trusted: a position outside the track, a path out of order or not ending where the
handle was confirmed is refused, and nothing is written.
"""

from __future__ import annotations

from mcmcp.sampling.gsp import Circle, point_to_slider, slider_to_point

CONFIRM_KEY = "space"  # the key saved when a slider is confirmed from the keyboard (the lab's)
MAX_MOVES = 2000  # handle moves kept per trial: a drag records only changes of position


def slider_view(circle: Circle) -> dict:
    """What the page needs besides the faces: the handle's start position on the track."""
    k = len(circle.points)
    return {"points": k, "start": int(point_to_slider(circle.start, circle.shift, k))}


def slider_answer(circle: Circle, position: object, rt: float, moves: object
                  ) -> tuple[int, list[list[float]]]:
    """(circle point confirmed, the handle's path) from a page's answer, or ValueError.

    position: slider position confirmed, an int 0..K-1; rt: seconds from onset to the confirm;
    moves: [[seconds from onset, position], ...] for every move of the handle, in time order,
    each time in [0, rt], the last one at `position` (no moves: `position` is where the handle
    started).
    """
    k = len(circle.points)
    start = int(point_to_slider(circle.start, circle.shift, k))

    def is_position(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < k

    if not is_position(position):
        raise ValueError(f"position must be a slider position, an integer in [0, {k - 1}]")
    if not isinstance(moves, list) or len(moves) > MAX_MOVES:
        raise ValueError(f"moves must be a list of at most {MAX_MOVES} [seconds, position] "
                         "pairs")
    path, last_t, last_position = [], 0.0, start
    for move in moves:
        if not (isinstance(move, list) and len(move) == 2 and is_position(move[1])):
            raise ValueError(f"each move must be [seconds from onset, position in [0, {k - 1}]]")
        t = move[0]
        # comparisons, not float(): a 400-digit integer is refused, not an overflow
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and last_t <= t <= rt):
            raise ValueError("move times must be seconds from onset, in order, none after rt")
        last_t, last_position = float(t), move[1]
        path.append([last_t, last_position])
    if last_position != position:
        raise ValueError("the handle's last move must end at the position confirmed")
    return int(slider_to_point(position, circle.shift, k)), path
