"""The user registry of a cluster: who may hold a token, with which role.

Pure: a value the caller loads from a JSON file (`Users.from_dict`), changes, and saves (`to_dict`,
written mode 0600 by the caller); no clock (the caller passes `now`), no file.

Rules:
1. A user is a name matching `tokens.USER_NAME_PATTERN` (1 to 63 characters), a role, a creation time
   and a serial; at most `USERS_MAX` users.
2. A serial is never given twice in a registry (`next_serial` only grows and is saved with it). A token
   names its user's serial, so deleting a user, creating it again, or `revoke_tokens` (each a new serial
   or none) makes every token issued before refused; `set_role` keeps the serial, and `tokens.verify`
   refuses a token whose role is above the user's new role.
3. `from_dict` refuses anything but `to_dict`'s shape with a sentence: a hand-edited file that is wrong
   stops the process that reads it rather than letting a user in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sixfold.storage.errors import AlreadyExists, InvalidRequest, StorageError
from sixfold.storage.security.tokens import Role, User, check_user_name

USERS_MAX = 1000
REGISTRY_VERSION = 1


class UnknownUser(StorageError):
    status_code_name = "NOT_FOUND"


class Users:
    """The user registry, a value: the caller loads it, changes it, saves it."""

    def __init__(self, users: Iterable[User] = (), next_serial: int = 1) -> None:
        self._users = {user.name: user for user in users}
        self._next_serial = max([next_serial, *(user.serial + 1 for user in self._users.values())])

    def get(self, name: str) -> User | None:
        """The user called `name`, or None (the lookup `tokens.verify` takes)."""
        return self._users.get(name)

    def list(self) -> list[User]:
        return sorted(self._users.values(), key=lambda user: user.name)

    def create(self, name: str, role: Role, now: float) -> User:
        check_user_name(name)
        if name in self._users:
            raise AlreadyExists(f"user {name} already exists (role {self._users[name].role.value}); delete it first")
        if len(self._users) >= USERS_MAX:
            raise InvalidRequest(f"the cluster has {USERS_MAX} users, the most it keeps; delete one first")
        return self._put(User(name=name, role=role, created_at=now, serial=self._next_serial))

    def delete(self, name: str) -> User:
        """Remove a user: every token it holds is refused from now on (rule 2)."""
        return self._users.pop(self._known(name).name)

    def set_role(self, name: str, role: Role) -> User:
        """Change a user's role; its tokens of a role above the new one are refused (rule 2)."""
        user = self._known(name)
        self._users[name] = User(name=name, role=role, created_at=user.created_at, serial=user.serial)
        return self._users[name]

    def revoke_tokens(self, name: str) -> User:
        """Refuse every token the user holds now (it gets a new serial); tokens issued later work."""
        user = self._known(name)
        return self._put(User(name=name, role=user.role, created_at=user.created_at, serial=self._next_serial))

    def _put(self, user: User) -> User:
        assert user.serial >= self._next_serial, "a serial is never given twice (rule 2)"
        self._users[user.name] = user
        self._next_serial = user.serial + 1
        return user

    def _known(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise UnknownUser(f"there is no user {name[:64]!r}; `sixfold user list` shows them")
        return user

    def __len__(self) -> int:
        return len(self._users)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": REGISTRY_VERSION,
            "next_serial": self._next_serial,
            "users": [
                {"name": u.name, "role": u.role.value, "created_at": u.created_at, "serial": u.serial}
                for u in self.list()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Users:
        """The registry from `to_dict`'s shape; anything else is refused with a sentence (rule 3)."""
        users, next_serial = data.get("users"), data.get("next_serial")
        if data.get("version") != REGISTRY_VERSION or not isinstance(users, list) or not _is_count(next_serial):
            raise InvalidRequest(
                f"the user registry is not version {REGISTRY_VERSION} with a list of users and a next serial"
            )
        if len(users) > USERS_MAX:
            raise InvalidRequest(f"the user registry holds {len(users)} users; at most {USERS_MAX} are kept")
        parsed: list[User] = []
        for index, item in enumerate(users):
            if not isinstance(item, dict) or set(item) != {"name", "role", "created_at", "serial"}:
                raise InvalidRequest(f"user {index} of the registry is not {{name, role, created_at, serial}}")
            name, role, created_at, serial = item["name"], item["role"], item["created_at"], item["serial"]
            check_user_name(name)
            if not isinstance(role, str) or not _is_count(serial) or not isinstance(created_at, int | float):
                raise InvalidRequest(f"user {name} of the registry has a bad role, serial or created_at")
            parsed.append(User(name=name, role=Role.parse(role), created_at=float(created_at), serial=serial))
        if len({user.name for user in parsed}) != len(parsed) or len({u.serial for u in parsed}) != len(parsed):
            raise InvalidRequest("the user registry names a user, or gives a serial, twice")
        assert isinstance(next_serial, int)
        return cls(parsed, next_serial)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
