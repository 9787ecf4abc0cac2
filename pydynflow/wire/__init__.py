"""How pydynflow's own processes hand each other objects: pickles, made and read by the engine.

Used only on the pipes between a world and the processes it starts (its writer, its worker
processes), never on data read from a database: what is stored is JSON
(`pydynflow.storage.codec`), and stored action classes resolve only from registered
`Action` subclasses. `plain` carries the engine's plain tuples; `code` carries user code.
"""
