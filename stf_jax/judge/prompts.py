"""Neutral prompts for the behavioural evaluation, written for it and held out from every fit.

None of them is a prompt or a text of the shipped pairs (`tests/test_judge.py` checks) or of the
out-of-distribution pairs. They are open requests a reply to which can be formal or casual, long or
short, hopeful or gloomy, plain or technical, hedged or certain: every judged trait has room to move.
`EVAL` (24) is scored; `CALIBRATION` (8) is used only to choose the steering strength `a`.
"""

EVAL: tuple[str, ...] = (
    "Tell me about the town where you grew up.",
    "What should I cook for dinner tonight?",
    "Describe a typical morning at a busy train station.",
    "How does a bicycle gear system work?",
    "Write a short note to a neighbour about a parcel you took in for them.",
    "What do you think about working from home?",
    "Explain how to plant tomatoes in a small garden.",
    "Describe the weather we might get this weekend.",
    "What is the best way to learn a new language?",
    "Tell me about a book you would recommend.",
    "Write a message to a colleague about tomorrow's meeting.",
    "How do I fix a squeaky door?",
    "Describe a visit to a local museum.",
    "What happens when you update a phone's software?",
    "Give me some advice about saving money.",
    "Write a reply to a friend who asked how your week went.",
    "Explain why the sea is salty.",
    "Describe the new cafe that opened on the corner.",
    "What should I know before adopting a cat?",
    "Summarize how a bill becomes a law.",
    "Write a short product description for a backpack.",
    "How are new medicines tested before they are approved?",
    "Tell me about your plans for the holidays.",
    "What is it like to run a marathon?",
)

CALIBRATION: tuple[str, ...] = (
    "Describe a walk in the park on an autumn afternoon.",
    "How do I make a good cup of coffee?",
    "Write a note to your landlord about a leaking tap.",
    "Explain what a spreadsheet is used for.",
    "Tell me about a trip to the seaside.",
    "What is a good way to start exercising?",
    "Describe the team's progress on the new website.",
    "Why do leaves change colour in autumn?",
)
