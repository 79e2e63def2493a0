"""Chapter 2: threads of messages, kept by the backend in process memory.

`POST /chat` takes a prompt and a thread id, hands the thread's whole history to the assistant,
stores the turn and answers with its messages. `GET /history/{thread_id}` answers the thread.
The messages live in `backend/store.py`, a dict in this process: see what the demos make of it.
"""

from uuid import UUID, uuid4

from fastapi import FastAPI, HTTPException, Request  # STARTER: noqa: F401 (TODO 2.1 uses it)
from fastapi.responses import JSONResponse
from pydantic import ValidationError  # STARTER: noqa: F401 (TODO 2.1 uses it)

from assistant import respond  # STARTER: noqa: F401 (TODO 2.1 uses it)
from backend import store
from backend.models import ChatReply, ChatRequest, History, Message, TextPart

app = FastAPI(title="Make It Scale — chapter 2")


# --8<-- [start:todo-handler]
@app.exception_handler(NotImplementedError)
async def unfinished_todo(request: Request, exc: NotImplementedError) -> JSONResponse:
    # An unfinished TODO answers 501 with its name, so the grader and the page can say which
    # one to do next instead of showing a stack trace.
    return JSONResponse(status_code=501, content={"detail": f"{exc} is not done yet"})


# --8<-- [end:todo-handler]


# --8<-- [start:health]
@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


# --8<-- [end:health]


# TODO 2.1: ask the assistant, and check its answer against the message model.
# Pass the history to `respond` as plain dicts (`message.model_dump()`), then turn each message
# it returns into a `Message` with `Message.model_validate`. An answer that does not fit the
# model is the assistant's fault: answer 502, not 500.
# BEGIN SOLUTION
# --8<-- [start:ask]
def ask_assistant(history: list[Message]) -> list[Message]:
    """The assistant's new messages for this thread, checked against the message model."""
    answer = respond([message.model_dump() for message in history])
    try:
        # Trust nothing that crosses a boundary: the assistant's answer is checked against
        # the same models as the API's, before it is stored or sent anywhere.
        return [Message.model_validate(message) for message in answer]
    except ValidationError as exc:
        raise HTTPException(
            status_code=502,
            detail=f"the assistant answered a malformed message: {exc.errors()[0]['msg']}",
        ) from exc


# --8<-- [end:ask]
# END SOLUTION
# BEGIN STARTER
# def ask_assistant(history: list[Message]) -> list[Message]:
#     """The assistant's new messages for this thread, checked against the message model."""
#     raise NotImplementedError("TODO 2.1")
# END STARTER


# TODO 2.3: store the whole turn, tool call and tool response included.
# In chat, the user's message and every message the assistant added go into the thread, so
# GET /history and the next turn see all that happened, not only the final answer.
# BEGIN SOLUTION
# --8<-- [start:chat]
@app.post("/chat")
def chat(request: ChatRequest) -> ChatReply:
    # null starts a new thread. The server picks the id (a random UUID), so two clients
    # can never end up in the same thread by accident.
    thread_id = request.thread_id or uuid4()
    user_message = Message(role="user", parts=[TextPart(text=request.prompt)])
    # The assistant remembers nothing itself: it sees the whole thread, new message last.
    turn = ask_assistant([*store.load(thread_id), user_message])
    # Store the turn whole, once the assistant has answered: a failed turn leaves nothing.
    store.append(thread_id, [user_message, *turn])
    # The answer is what this turn added to the thread: the user's message, then the assistant's.
    return ChatReply(thread_id=thread_id, messages=[user_message, *turn])


# --8<-- [end:chat]
# END SOLUTION
# BEGIN STARTER
# @app.post("/chat")
# def chat(request: ChatRequest) -> ChatReply:
#     # null starts a new thread. The server picks the id (a random UUID), so two clients
#     # can never end up in the same thread by accident.
#     thread_id = request.thread_id or uuid4()
#     user_message = Message(role="user", parts=[TextPart(text=request.prompt)])
#     # The assistant remembers nothing itself: it sees the whole thread, new message last.
#     turn = ask_assistant([*store.load(thread_id), user_message])
#     # For now only the user's message and the final answer are stored.
#     store.append(thread_id, [user_message, turn[-1]])
#     return ChatReply(thread_id=thread_id, messages=[user_message, *turn])
# END STARTER


# --8<-- [start:history]
@app.get("/history/{thread_id}")
def history(thread_id: UUID) -> History:
    # A thread id nobody has used yet is an empty thread, not an error: 200 with no messages.
    return History(thread_id=thread_id, messages=store.load(thread_id))


# --8<-- [end:history]


# Chapter 1's exercise, finished.
@app.get("/ping")
def ping() -> dict[str, str]:
    return {"ping": "pong"}
