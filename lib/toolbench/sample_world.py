"""The sample corpus's world: categories, tools and their APIs (parameters, the query phrasings that
ask for each, a seeded response maker, the sentence a final answer uses), and the values they draw
from. lib/toolbench/sample.py turns it into ToolBench-format files; every value is synthetic.
"""
from __future__ import annotations


CITIES = ["Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Toronto", "Mumbai", "Sydney", "Cairo", "Berlin",
          "Seoul", "Madrid", "Denver", "Hanoi", "Dublin", "Santiago"]
NEW_CITIES = ["Reykjavik", "Accra", "Quito", "Tallinn", "Perth", "Osaka"]   # only in test queries
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "INR", "BRL", "CAD", "KES"]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SAP", "SONY", "INFY"]
COINS = ["bitcoin", "ethereum", "solana", "cardano", "dogecoin"]
LEAGUES = ["Premier League", "La Liga", "Serie A", "Bundesliga", "MLS"]
PLAYERS = ["Nikola Jokic", "Luka Doncic", "Jayson Tatum", "Stephen Curry", "Joel Embiid"]
MOVIES = ["Inception", "Arrival", "Parasite", "Amelie", "Spirited Away", "Heat", "Up"]
INGREDIENTS = ["chickpeas", "salmon", "mushrooms", "tofu", "lentils", "spinach", "eggplant"]
FOODS = ["banana", "avocado", "oatmeal", "almonds", "broccoli", "yogurt"]
WORDS = ["serendipity", "ephemeral", "ubiquitous", "resilient", "meticulous", "candid"]
LANGS = ["French", "Spanish", "German", "Japanese", "Swahili", "Portuguese"]
PHRASES = ["good morning", "where is the station", "thank you very much", "see you tomorrow"]
ARTISTS = [("Adele", "Hello"), ("Queen", "Bohemian Rhapsody"), ("ABBA", "Dancing Queen"),
           ("Coldplay", "Yellow"), ("Bob Marley", "Redemption Song")]
COUNTRIES = ["Brazil", "Japan", "Kenya", "Canada", "India", "France"]
EMAILS = ["ana@example.com", "li.wei@example.org", "sam@invalid", "kofi@example.net"]
IPS = ["203.0.113.7", "198.51.100.23", "192.0.2.44", "203.0.113.150"]
FLIGHTS = ["AF1234", "BA287", "JL44", "KQ101", "LH400", "QF12"]
CONDITIONS = ["sunny", "cloudy", "light rain", "windy", "snow showers", "clear"]


def P(name, kind, description, default=""):
    return {"name": name, "type": kind, "description": description, "default": default}


# category -> tool -> (tool description, [api spec]). An api spec holds its parameters, the query
# phrasings that ask for it, a seeded response maker and the sentence a final answer uses.
# Long: the world is data, one literal read as a table.
def world():
    s, n = "STRING", "NUMBER"
    return {
        "Weather": {
            "WeatherNow": ("Current conditions and short forecasts for cities worldwide.", [
                ("Current Weather", "Current temperature and conditions for a city.",
                 [P("city", s, "City name", "London")], [], {"city": CITIES},
                 ["What's the weather like in {city} right now?", "Tell me the current weather in {city}."],
                 lambda a, r: {"city": a["city"], "temp_c": r.randint(-5, 35), "condition": r.choice(CONDITIONS)},
                 lambda a, o: f"It is {o['temp_c']} C and {o['condition']} in {o['city']}"),
                ("Forecast", "Daily forecast for the next days.",
                 [P("city", s, "City name", "London")], [P("days", n, "Number of days (1-7)", 3)],
                 {"city": CITIES},
                 ["What is the forecast for {city} this week?", "Will it rain in {city} in the coming days?"],
                 lambda a, r: {"city": a["city"], "days": [{"day": d + 1, "high_c": r.randint(0, 35),
                                                            "condition": r.choice(CONDITIONS)} for d in range(3)]},
                 lambda a, o: f"the forecast for {o['city']} is " + ", ".join(
                     f"day {d['day']}: {d['condition']}, high {d['high_c']} C" for d in o["days"])),
            ]),
            "AirQualityHub": ("Air quality index and pollutants by city.", [
                ("Air Quality", "Air quality index (AQI) for a city.",
                 [P("city", s, "City name", "Delhi")], [], {"city": CITIES},
                 ["How is the air quality in {city} today?", "Check the air quality index for {city}."],
                 lambda a, r: {"city": a["city"], "aqi": r.randint(10, 180), "main_pollutant": r.choice(["pm25", "o3", "no2"])},
                 lambda a, o: f"the air quality index in {o['city']} is {o['aqi']} (main pollutant {o['main_pollutant']})"),
            ]),
        },
        "Finance": {
            "CurrencyConverter": ("Live foreign exchange rates and conversion.", [
                ("Convert", "Convert an amount between two currencies.",
                 [P("from", s, "Source currency code", "USD"), P("to", s, "Target currency code", "EUR"),
                  P("amount", n, "Amount to convert", 1)], [],
                 {"from": CURRENCIES, "to": CURRENCIES, "amount": [10, 50, 100, 250, 1000]},
                 ["How much is {amount} {from} in {to}?", "Convert {amount} {from} to {to} for me."],
                 lambda a, r: {"from": a["from"], "to": a["to"], "amount": a["amount"],
                               "result": round(a["amount"] * r.uniform(0.2, 3.0), 2)},
                 lambda a, o: f"{o['amount']} {o['from']} is {o['result']} {o['to']}"),
            ]),
            "StockQuotes": ("Real-time stock quotes for listed companies.", [
                ("Quote", "Latest price and daily change of a stock symbol.",
                 [P("symbol", s, "Ticker symbol", "IBM")], [], {"symbol": SYMBOLS},
                 ["What is the current stock price of {symbol}?", "Get me the latest quote for {symbol}."],
                 lambda a, r: {"symbol": a["symbol"], "price": round(r.uniform(20, 900), 2),
                               "change_pct": round(r.uniform(-4, 4), 2)},
                 lambda a, o: f"{o['symbol']} trades at {o['price']} ({o['change_pct']}% today)"),
            ]),
            "CryptoTicker": ("Cryptocurrency prices and market caps.", [
                ("Coin Price", "Price of a cryptocurrency in USD.",
                 [P("coin", s, "Coin id", "bitcoin")], [], {"coin": COINS},
                 ["What's the price of {coin} right now?", "Check the current {coin} price."],
                 lambda a, r: {"coin": a["coin"], "usd": round(r.uniform(0.05, 70000), 2)},
                 lambda a, o: f"{o['coin']} costs {o['usd']} USD"),
            ]),
        },
        "Sports": {
            "FootballLive": ("Football fixtures, live scores and standings.", [
                ("Live Matches", "Matches being played now in a league.",
                 [P("league", s, "League name", "Premier League")], [], {"league": LEAGUES},
                 ["Are there any live {league} matches right now?", "Show me the live scores in the {league}."],
                 lambda a, r: {"league": a["league"], "matches": [{"home": f"Team {r.randint(1, 20)}",
                               "away": f"Team {r.randint(21, 40)}", "score": f"{r.randint(0, 3)}-{r.randint(0, 3)}"}]},
                 lambda a, o: f"in the {o['league']} {o['matches'][0]['home']} vs {o['matches'][0]['away']} "
                              f"is {o['matches'][0]['score']}"),
                ("Standings", "League table.",
                 [P("league", s, "League name", "Premier League")], [], {"league": LEAGUES},
                 ["Who is leading the {league} table?", "Get the current {league} standings."],
                 lambda a, r: {"league": a["league"], "leader": f"Team {r.randint(1, 20)}", "points": r.randint(20, 80)},
                 lambda a, o: f"{o['leader']} leads the {o['league']} with {o['points']} points"),
            ]),
            "HoopsStats": ("Basketball player statistics.", [
                ("Player Stats", "Season averages of a basketball player.",
                 [P("player", s, "Player full name", "LeBron James")], [], {"player": PLAYERS},
                 ["What are {player}'s stats this season?", "How many points is {player} averaging?"],
                 lambda a, r: {"player": a["player"], "ppg": round(r.uniform(8, 33), 1), "rpg": round(r.uniform(2, 13), 1)},
                 lambda a, o: f"{o['player']} averages {o['ppg']} points and {o['rpg']} rebounds"),
            ]),
        },
        "Movies": {
            "FilmBase": ("Movie search, details and ratings.", [
                ("Search Movie", "Find a movie by title.",
                 [P("title", s, "Movie title", "Alien")], [], {"title": MOVIES},
                 ["Find the movie {title} for me.", "Can you look up the film {title}?"],
                 lambda a, r: {"title": a["title"], "year": r.randint(1980, 2023), "movie_id": f"tt{r.randint(100000, 999999)}"},
                 lambda a, o: f"{o['title']} ({o['year']}) has id {o['movie_id']}"),
                ("Movie Rating", "Audience rating of a movie.",
                 [P("title", s, "Movie title", "Alien")], [], {"title": MOVIES},
                 ["How well rated is {title}?", "What rating does {title} have?"],
                 lambda a, r: {"title": a["title"], "rating": round(r.uniform(5.5, 9.3), 1), "votes": r.randint(1000, 900000)},
                 lambda a, o: f"{o['title']} is rated {o['rating']}/10 by {o['votes']} viewers"),
            ]),
            "StreamFinder": ("Where to stream a movie.", [
                ("Where To Watch", "Streaming services that offer a movie.",
                 [P("title", s, "Movie title", "Alien")], [P("country", s, "Country", "US")], {"title": MOVIES},
                 ["Where can I stream {title}?", "Which service has {title} available?"],
                 lambda a, r: {"title": a["title"], "services": r.sample(["Netflix", "Prime Video", "Max", "Disney+", "Mubi"], 2)},
                 lambda a, o: f"{o['title']} streams on {' and '.join(o['services'])}"),
            ]),
        },
        "Travel": {
            "FlightTracker": ("Flight status and schedules.", [
                ("Flight Status", "Status of a flight by number.",
                 [P("flight_number", s, "IATA flight number", "BA117")], [], {"flight_number": FLIGHTS},
                 ["Is flight {flight_number} on time?", "What's the status of flight {flight_number}?"],
                 lambda a, r: {"flight": a["flight_number"], "status": r.choice(["on time", "delayed 25 min", "boarding", "landed"])},
                 lambda a, o: f"flight {o['flight']} is {o['status']}"),
            ]),
            "HotelScout": ("Hotel search by city.", [
                ("Search Hotels", "Hotels available in a city.",
                 [P("city", s, "City name", "Rome")], [P("max_price", n, "Maximum price per night", 200)], {"city": CITIES},
                 ["Find me a hotel in {city}.", "What hotels are available in {city}?"],
                 lambda a, r: {"city": a["city"], "hotels": [{"name": f"Hotel {r.choice(['Aurora', 'Central', 'Lotus', 'Harbor'])}",
                                                               "price": r.randint(60, 300)}]},
                 lambda a, o: f"{o['hotels'][0]['name']} in {o['city']} costs {o['hotels'][0]['price']} per night"),
            ]),
            "WorldClock": ("Time zones and local time.", [
                ("Local Time", "Current local time in a city.",
                 [P("city", s, "City name", "New York")], [], {"city": CITIES},
                 ["What time is it in {city}?", "Tell me the local time in {city}."],
                 lambda a, r: {"city": a["city"], "time": f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}", "utc_offset": r.randint(-8, 10)},
                 lambda a, o: f"it is {o['time']} in {o['city']} (UTC{o['utc_offset']:+d})"),
            ]),
        },
        "Food": {
            "RecipeBox": ("Recipes by ingredient.", [
                ("Search Recipes", "Recipes that use an ingredient.",
                 [P("ingredient", s, "Main ingredient", "rice")], [], {"ingredient": INGREDIENTS},
                 ["Give me a recipe with {ingredient}.", "What can I cook with {ingredient}?"],
                 lambda a, r: {"ingredient": a["ingredient"], "recipes": [f"{a['ingredient'].title()} {r.choice(['curry', 'salad', 'stew', 'bowl'])}"]},
                 lambda a, o: f"you could make {o['recipes'][0]}"),
            ]),
            "NutriFacts": ("Nutrition facts of foods.", [
                ("Nutrition", "Calories and macros per 100 g.",
                 [P("food", s, "Food name", "apple")], [], {"food": FOODS},
                 ["How many calories are in {food}?", "What are the nutrition facts of {food}?"],
                 lambda a, r: {"food": a["food"], "kcal": r.randint(30, 600), "protein_g": round(r.uniform(0, 25), 1)},
                 lambda a, o: f"100 g of {o['food']} has {o['kcal']} kcal and {o['protein_g']} g protein"),
            ]),
        },
        "Education": {
            "WordWise": ("English dictionary and thesaurus.", [
                ("Define", "Definition of an English word.",
                 [P("word", s, "The word", "apple")], [], {"word": WORDS},
                 ["What does {word} mean?", "Define the word {word}."],
                 lambda a, r: {"word": a["word"], "definition": f"a {r.choice(['quality', 'state', 'way'])} of being {a['word'][:4]}-like"},
                 lambda a, o: f"'{o['word']}' means {o['definition']}"),
                ("Synonyms", "Synonyms of a word.",
                 [P("word", s, "The word", "happy")], [], {"word": WORDS},
                 ["Give me synonyms for {word}.", "What are other words for {word}?"],
                 lambda a, r: {"word": a["word"], "synonyms": r.sample(["lucky", "fleeting", "common", "hardy", "careful", "frank"], 2)},
                 lambda a, o: f"synonyms of {o['word']} are {', '.join(o['synonyms'])}"),
            ]),
            "TriviaBank": ("Trivia questions by topic.", [
                ("Random Question", "A random trivia question on a topic.",
                 [P("topic", s, "Topic", "science")], [], {"topic": ["science", "history", "geography", "art"]},
                 ["Ask me a {topic} trivia question.", "I want a trivia question about {topic}."],
                 lambda a, r: {"topic": a["topic"], "question": f"Which {a['topic']} fact number {r.randint(1, 99)} is true?"},
                 lambda a, o: f"here is a {o['topic']} question: {o['question']}"),
            ]),
        },
        # Categories below are never seen in training: they feed G1-category and G2-category.
        "Music": {
            "LyricFind": ("Song lyrics search.", [
                ("Lyrics", "Lyrics of a song.",
                 [P("artist", s, "Artist", "Prince"), P("song", s, "Song title", "Purple Rain")], [],
                 {"artist,song": ARTISTS},
                 ["Find the lyrics of {song} by {artist}.", "Show me the words to {artist}'s {song}."],
                 lambda a, r: {"artist": a["artist"], "song": a["song"], "first_line": f"line {r.randint(1, 9)} of {a['song']}"},
                 lambda a, o: f"{o['song']} by {o['artist']} begins with '{o['first_line']}'"),
            ]),
            "ChartWatch": ("Music charts by country.", [
                ("Top Songs", "Top songs in a country this week.",
                 [P("country", s, "Country", "US")], [], {"country": COUNTRIES},
                 ["What are the top songs in {country} this week?", "Show me the music chart for {country}."],
                 lambda a, r: {"country": a["country"], "top": [f"Song {r.randint(1, 99)}", f"Song {r.randint(100, 199)}"]},
                 lambda a, o: f"the top songs in {o['country']} are {', '.join(o['top'])}"),
            ]),
        },
        "Communication": {
            "MailCheck": ("Email address validation.", [
                ("Validate Email", "Check whether an email address is deliverable.",
                 [P("email", s, "Email address", "me@example.com")], [], {"email": EMAILS},
                 ["Is {email} a valid email address?", "Check if the email {email} is deliverable."],
                 lambda a, r: {"email": a["email"], "valid": "@example" in a["email"], "mx_found": r.random() > 0.2},
                 lambda a, o: f"{o['email']} is {'valid' if o['valid'] else 'not valid'}"),
            ]),
            "IPInsight": ("IP address geolocation.", [
                ("IP Info", "Location and owner of an IP address.",
                 [P("ip", s, "IPv4 address", "8.8.8.8")], [], {"ip": IPS},
                 ["Where is the IP address {ip} located?", "Look up the IP {ip}."],
                 lambda a, r: {"ip": a["ip"], "country": r.choice(COUNTRIES), "isp": f"ISP {r.randint(1, 50)}"},
                 lambda a, o: f"{o['ip']} is in {o['country']} ({o['isp']})"),
            ]),
            "LinguaBridge": ("Text translation.", [
                ("Translate", "Translate text into a language.",
                 [P("text", s, "Text to translate", "hello"), P("target", s, "Target language", "French")], [],
                 {"text": PHRASES, "target": LANGS},
                 ["Translate '{text}' into {target}.", "How do you say '{text}' in {target}?"],
                 lambda a, r: {"text": a["text"], "target": a["target"], "translation": f"[{a['target'][:2].lower()}] {a['text']}"},
                 lambda a, o: f"'{o['text']}' in {o['target']} is '{o['translation']}'"),
            ]),
        },
    }
