"""An emulated Feetech STS serial bus on a pseudo-terminal, for testing without hardware.

:class:`EmulatedFeetechBus` opens a pty; its slave end (``bus.port``, e.g. ``/dev/pts/5``) is what a
driver opens as its serial port. A thread answers the Feetech protocol on the master end for a
set of emulated STS3215 servos: packets ``FF FF id len instr params... checksum`` with
``checksum = ~(id + len + instr + sum(params)) & 0xFF``; instructions PING, READ, WRITE, SYNC_READ
(one status packet per listed servo) and SYNC_WRITE (no reply). Each servo has a 256-byte control
table; while torque is enabled its present position moves toward the goal at ``speed_steps_s``.
Faults for tests: :meth:`EmulatedFeetechBus.unplug` makes a servo stop answering. A leader arm moved
by hand: :attr:`EmulatedFeetechBus.hand` (``() -> {id: steps}``, evaluated at every packet) sets the
present position of every listed servo whose torque is off.
"""

from __future__ import annotations

import os
import threading
import time

# STS3215 control-table addresses (little-endian words).
TORQUE_ENABLE, GOAL_POSITION, PRESENT_POSITION, PRESENT_SPEED = 40, 42, 56, 58
PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 1, 2, 3, 0x82, 0x83
BROADCAST = 0xFE


def _checksum(body: bytes) -> int:
    return ~sum(body) & 0xFF


def _word(table: bytearray, addr: int) -> int:
    return table[addr] | (table[addr + 1] << 8)


def _set_word(table: bytearray, addr: int, value: int) -> None:
    table[addr], table[addr + 1] = value & 0xFF, (value >> 8) & 0xFF


class EmulatedFeetechBus:
    """Emulated servos behind a pty (see the module docstring).

    Args:
        ids: servo ids on the bus.
        start_steps: initial position (steps, 0..4095) of every servo.
        speed_steps_s: how fast a torqued servo moves toward its goal (steps/s).
    """

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), start_steps: int = 2048, speed_steps_s: float = 4000.0):
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.tables = {i: bytearray(256) for i in ids}
        self.positions = {i: float(start_steps) for i in ids}
        for i in ids:
            _set_word(self.tables[i], GOAL_POSITION, start_steps)
            _set_word(self.tables[i], PRESENT_POSITION, start_steps)
        self.speed = float(speed_steps_s)
        self.unplugged: set[int] = set()
        self.hand = None  # () -> {servo id: steps}: a hand moving the torque-off servos
        self.sync_reads_to_drop = 0
        self.n_packets = 0
        self._stop = False
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="feetech-bus")
        self._thread.start()

    def unplug(self, servo_id: int) -> None:
        """Fault injection: the servo stops answering."""
        self.unplugged.add(servo_id)

    def drop_sync_reads(self, n: int) -> None:
        """Fault injection: the next ``n`` sync reads get no status packets (line noise)."""
        self.sync_reads_to_drop = int(n)

    def goal(self, servo_id: int) -> int:
        """The goal position (steps) last written to a servo."""
        return _word(self.tables[servo_id], GOAL_POSITION)

    def close(self) -> None:
        """Stop the bus thread and close the pty."""
        self._stop = True
        self._thread.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------ emulation
    def _physics(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        hand = self.hand() if self.hand is not None else {}
        for i, table in self.tables.items():
            goal, pos = _word(table, GOAL_POSITION), self.positions[i]
            step = self.speed * dt if table[TORQUE_ENABLE] else 0.0
            new = pos + max(-step, min(step, goal - pos))
            if i in hand and not table[TORQUE_ENABLE]:
                new = min(max(float(hand[i]), 0.0), 4095.0)
            velocity = (new - pos) / dt if dt > 0 else 0.0
            self.positions[i] = new
            _set_word(table, PRESENT_POSITION, int(round(new)))
            v = int(round(abs(velocity)))
            _set_word(table, PRESENT_SPEED, min(v, 0x7FFF) | (0x8000 if velocity < 0 else 0))

    def _reply(self, servo_id: int, params: bytes = b"") -> None:
        if servo_id in self.unplugged:
            return
        body = bytes([servo_id, len(params) + 2, 0]) + params
        os.write(self.master, b"\xff\xff" + body + bytes([_checksum(body)]))

    def _handle(self, sid: int, instr: int, params: bytes) -> None:
        self.n_packets += 1
        self._physics()
        if instr == PING and sid in self.tables:
            self._reply(sid)
        elif instr == READ and sid in self.tables:
            addr, n = params[0], params[1]
            self._reply(sid, bytes(self.tables[sid][addr:addr + n]))
        elif instr == WRITE and sid in self.tables and sid not in self.unplugged:
            addr = params[0]
            self.tables[sid][addr:addr + len(params) - 1] = params[1:]
            self._reply(sid)
        elif instr == SYNC_READ and sid == BROADCAST and self.sync_reads_to_drop > 0:
            self.sync_reads_to_drop -= 1
        elif instr == SYNC_READ and sid == BROADCAST:
            addr, n = params[0], params[1]
            for i in params[2:]:
                if i in self.tables:
                    self._reply(i, bytes(self.tables[i][addr:addr + n]))
        elif instr == SYNC_WRITE and sid == BROADCAST:
            addr, n = params[0], params[1]
            data = params[2:]
            for k in range(0, len(data), n + 1):
                i = data[k]
                if i in self.tables and i not in self.unplugged:
                    self.tables[i][addr:addr + n] = data[k + 1:k + 1 + n]

    def _serve(self) -> None:
        import select

        buf = b""
        while not self._stop:
            if not select.select([self.master], [], [], 0.01)[0]:
                continue
            try:
                buf += os.read(self.master, 4096)
            except OSError:
                return
            while True:
                start = buf.find(b"\xff\xff")
                if start < 0:
                    buf = b""
                    break
                buf = buf[start:]
                if len(buf) < 4:
                    break
                sid, length = buf[2], buf[3]
                if len(buf) < 4 + length:
                    break
                packet, buf = buf[:4 + length], buf[4 + length:]
                if packet[-1] != _checksum(packet[2:-1]):
                    continue  # corrupt: a real servo ignores it
                self._handle(sid, packet[4], packet[5:-1])
