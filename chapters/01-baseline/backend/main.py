"""Chapter 1: the smallest chat backend — one endpoint that asks the assistant and answers."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from assistant import respond

app = FastAPI(title="Make It Scale — chapter 1")


@app.exception_handler(NotImplementedError)
async def unfinished_todo(request: Request, exc: NotImplementedError) -> JSONResponse:
    # An unfinished TODO answers 501 with its name, so the grader and the page can say which
    # one to do next instead of showing a stack trace.
    return JSONResponse(status_code=501, content={"detail": f"{exc} is not done yet"})


class ChatRequest(BaseModel):
    # Bounds on input are part of the API: a blank or huge prompt is rejected with 422.
    prompt: str = Field(min_length=1, max_length=8000, pattern=r"\S")


class ChatReply(BaseModel):
    reply: str


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/chat")
def chat(request: ChatRequest) -> ChatReply:
    # The assistant takes a whole conversation; in this chapter it is one message long.
    history = [{"role": "user", "parts": [{"text": request.prompt}]}]
    new_messages = respond(history)
    # The turn may include tool calls (a dice roll); the reply is the model's text.
    texts = [
        part["text"]
        for message in new_messages
        if message["role"] == "model"
        for part in message["parts"]
        if "text" in part
    ]
    return ChatReply(reply="\n\n".join(texts))


# TODO 1.4: add `GET /ping` that answers {"ping": "pong"}.
@app.get("/ping")
def ping() -> dict[str, str]:
    raise NotImplementedError("TODO 1.4")
